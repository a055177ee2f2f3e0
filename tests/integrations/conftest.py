"""Session-scoped real servers on loopback (see realservers.py), stopped after the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from realservers import Server, start_nginx, start_postgres, start_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Server]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    pytest.importorskip("psycopg")
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nginx_server() -> Iterator[Server]:
    server = start_nginx()
    try:
        yield server
    finally:
        server.stop()
