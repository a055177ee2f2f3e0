"""Session-scoped real servers on loopback (peerwatch.testing.servers), stopped at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from peerwatch.testing.servers import (
    Server,
    ServerUnavailable,
    start_nats,
    start_nginx,
    start_postgres,
    start_rabbitmq,
    start_redis,
    stop_rabbitmq,
)


def started(start: Callable[[], Server]) -> Server:
    try:
        return start()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Server]:
    server = started(start_redis)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    pytest.importorskip("psycopg")
    server = started(start_postgres)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nginx_server() -> Iterator[Server]:
    server = started(start_nginx)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[Server]:
    server = started(start_rabbitmq)
    try:
        yield server
    finally:
        stop_rabbitmq(server)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[Server]:
    server = started(start_nats)
    try:
        yield server
    finally:
        server.stop()
