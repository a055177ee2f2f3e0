"""Servers of both kinds for the fuzz suite, each killed with its canary at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fuzzkit import KINDS, Target


@pytest.fixture(scope="module", params=KINDS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """One server of each kind for the whole module; every test ends with ``check()``."""
    started = Target(request.param)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(params=KINDS)
def fresh(request: pytest.FixtureRequest) -> Iterator[Callable[..., Target]]:
    """``fresh(*server_args)``: a server of its own, for a test that leaves it worn out."""
    started: list[Target] = []

    def start(*args: str) -> Target:
        one = Target(request.param, *args)
        started.append(one)
        return one

    yield start
    for one in started:
        one.stop()
