"""Peers in real processes: started per test, always killed at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from peerkit import Peer


@pytest.fixture
def spawn() -> Iterator[type[Peer]]:
    """``spawn("echo", "--timeout", "1")`` -> a Peer; every one is killed after the test."""
    started: list[Peer] = []

    class Tracked(Peer):
        def __init__(self, *args: str) -> None:
            super().__init__(*args)
            started.append(self)

    yield Tracked
    for peer in started:
        peer.stop()
