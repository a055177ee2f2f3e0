"""Fixtures for zero-code protection (helpers in protectkit.py)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from peerwatch.testing.servers import Server, ServerUnavailable, start_rabbitmq, start_redis


@pytest.fixture
def loopback_server() -> Iterator[socket.socket]:
    """A listening socket on 127.0.0.1 that accepts (and keeps) connections in the backlog."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield server
    finally:
        server.close()


def _serve(start: Callable[[], Server]) -> Iterator[Server]:
    try:
        server = start()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rabbitmq_server() -> Iterator[Server]:
    """A real RabbitMQ on loopback (its Debian package), stopped after the module."""
    yield from _serve(start_rabbitmq)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Server]:
    """A real Redis on loopback (its Debian package), stopped after the module."""
    yield from _serve(start_redis)
