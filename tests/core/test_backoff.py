"""Reconnect backoff: grows exponentially, jitters, and stays inside the time budget."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerwatch.core.backoff import Backoff
from peerwatch.errors import ConfigError


def test_steps_double_up_to_the_maximum_with_jitter_in_the_upper_half() -> None:
    lowest = list(itertools.islice(Backoff(0.1, 1.0).delays(100.0, lambda: 0.0), 6))
    highest = list(itertools.islice(Backoff(0.1, 1.0).delays(100.0, lambda: 1.0), 6))
    assert lowest == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5])
    assert highest == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


@given(st.floats(0.001, 60.0), st.integers(0, 2**32))
def test_delays_sum_to_exactly_the_budget_and_are_never_negative(budget: float, seed: int) -> None:
    rng = random.Random(seed)
    delays = list(itertools.islice(Backoff().delays(budget, rng.random), 100_000))
    assert all(d > 0 for d in delays)
    assert sum(delays) == pytest.approx(budget)


def test_two_clients_that_lost_the_server_together_come_back_apart() -> None:
    first = list(Backoff().delays(10.0, random.Random(1).random))
    second = list(Backoff().delays(10.0, random.Random(2).random))
    assert first[3] != second[3]


@pytest.mark.parametrize(
    "kwargs", [{"initial": 0}, {"initial": 2.0, "maximum": 1.0}, {"factor": 0.5}]
)
def test_impossible_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Backoff(**kwargs)
