"""Fixtures for the server tests: every serve/ping process started here is killed at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from serveproc import Proc, Served, ping


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """``serve("--workers", "2")`` -> a ready ``Served``, killed with its workers after the test."""
    started: list[Proc] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Served:
        served = Served(*args, env=env)
        started.append(served)
        return served.ready()

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def pinger() -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(*args: str) -> Proc:
        proc = ping(*args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
