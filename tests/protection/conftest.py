"""Fixtures for zero-code protection (helpers in protectkit.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def loopback_server() -> Iterator[socket.socket]:
    """A listening socket on 127.0.0.1 that accepts (and keeps) connections in the backlog."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield server
    finally:
        server.close()
