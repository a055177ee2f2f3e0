"""Pool check against real servers: a pooled connection the server closed is replaced at checkout.

The servers close idle connections themselves (PostgreSQL ``idle_session_timeout``,
Redis ``timeout``); the pools hand out connections as usual; the application
code runs a query on each one it gets. With peerwatch's check wired in, no
error reaches it and the kernel's verdict on the old sockets is shown first, so
the scenario is real. Without the check (the control), the same code gets the
server's error. ``PEERWATCH_POOL_TRIALS`` sets the number of trials (1,000 for
the issue's claim, run by ``bench/pool_trials.py``; a small count in CI).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import pytest

import peerwatch
from peerwatch.testing.servers import Server

TRIALS = int(os.environ.get("PEERWATCH_POOL_TRIALS", "40"))
BATCH = 20  # connections checked out, used and returned together in one round
IDLE_MS = 100  # PostgreSQL idle_session_timeout for the pooled sessions


def rounds(trials: int) -> list[int]:
    full, rest = divmod(trials, BATCH)
    return [BATCH] * full + ([rest] if rest else [])


def wait_dead(fds: list[Any], timeout: float = 5.0) -> None:
    """Until the kernel says every one of these sockets is dead (the server closed it)."""
    deadline = time.monotonic() + timeout
    while not all(peerwatch.check(fd).dead for fd in fds):
        assert time.monotonic() < deadline, "the server never closed the pooled connections"
        time.sleep(0.02)


# --- SQLAlchemy over psycopg ---------------------------------------------------------------


def sqlalchemy_engine(server: Server, *, checked: bool) -> Any:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from peerwatch.integrations.sqlalchemy import install

    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg://postgres@{server.address[0]}:{server.port}/postgres",
        connect_args={"options": f"-c idle_session_timeout={IDLE_MS}"},
        pool_size=BATCH,
        max_overflow=0,
    )
    if checked:
        install(engine)
    return engine


def use(conn: Any) -> Any:
    from sqlalchemy import text

    assert conn.execute(text("SELECT 1")).scalar() == 1  # opens a transaction: not idle
    return conn


def test_sqlalchemy_pool_replaces_connections_postgres_closed(postgres_server: Server) -> None:
    from sqlalchemy import event

    engine = sqlalchemy_engine(postgres_server, checked=True)
    invalidated: list[object] = []
    event.listen(engine, "invalidate", lambda conn, record, exc: invalidated.append(exc))
    try:
        replaced = 0
        for size in rounds(TRIALS):
            # a fresh pool each round, so none of its connections can age into the server's
            # idle timeout between rounds; hold `size` connections at once so the pool has
            # that many to hand out again; each runs its query right after checkout
            engine.dispose()
            conns = [use(engine.connect()) for _ in range(size)]
            fds = [c.connection.dbapi_connection.fileno() for c in conns]
            for c in conns:
                c.close()  # back to the pool, where the server's idle timer closes it
            wait_dead(fds)  # the server closed them: the kernel knows (CLOSE_WAIT)
            before = len(invalidated)
            conns = [use(engine.connect()) for _ in range(size)]  # the application: no error
            for c in conns:
                c.close()
            replaced += len(invalidated) - before
        assert replaced == TRIALS
        assert all("peerwatch.check" in str(exc) for exc in invalidated)
    finally:
        engine.dispose()


def test_without_the_check_the_application_gets_the_error(postgres_server: Server) -> None:
    from sqlalchemy import exc, text

    engine = sqlalchemy_engine(postgres_server, checked=False)
    try:
        with engine.connect() as c:
            fd = c.connection.dbapi_connection.fileno()
            c.execute(text("SELECT 1"))
        wait_dead([fd])
        with pytest.raises(exc.OperationalError), engine.connect() as c:
            c.execute(text("SELECT 1"))
    finally:
        engine.dispose()


# --- psycopg_pool ------------------------------------------------------------------------


def test_psycopg_pool_check_replaces_a_connection_postgres_closed(postgres_server: Server) -> None:
    psycopg_pool = pytest.importorskip("psycopg_pool")
    from peerwatch.integrations.psycopg import check

    with psycopg_pool.ConnectionPool(
        postgres_server.extra["dsn"],
        kwargs={"options": f"-c idle_session_timeout={IDLE_MS}"},
        min_size=1,
        max_size=1,
        check=check,
        open=True,
    ) as pool:
        with pool.connection() as conn:
            old = conn.fileno()
            conn.execute("SELECT 1")
        wait_dead([old])
        with pool.connection(timeout=10) as conn:  # replaced behind the scenes
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert pool.get_stats().get("connections_lost", 0) == 1


# --- redis-py ----------------------------------------------------------------------------


@pytest.fixture
def redis_idle_timeout(redis_server: Server) -> Any:
    redis = pytest.importorskip("redis")
    admin = redis.Redis(*redis_server.address)
    admin.config_set("timeout", 1)  # seconds: the smallest Redis allows
    try:
        yield redis_server
    finally:
        admin.config_set("timeout", 0)
        admin.close()


def test_redis_pool_replaces_connections_redis_closed(redis_idle_timeout: Server) -> None:
    import redis

    from peerwatch.integrations.redis import CheckedConnection

    pool = redis.ConnectionPool(
        host=redis_idle_timeout.address[0],
        port=redis_idle_timeout.port,
        connection_class=CheckedConnection,
        max_connections=BATCH,
    )
    try:
        for size in rounds(TRIALS):
            conns = [pool.get_connection() for _ in range(size)]
            socks: list[socket.socket] = []
            for c in conns:
                c.send_command("PING")
                assert c.read_response() in (b"PONG", "PONG", True)
                socks.append(c._get_socket())
                pool.release(c)
            wait_dead(socks)
            conns = [pool.get_connection() for _ in range(size)]
            for c, old in zip(conns, socks, strict=True):
                c.send_command("PING")  # the application: no error
                assert c.read_response() in (b"PONG", "PONG", True)
                assert c._get_socket() is not old  # a new connection, not the closed one
            for c in conns:
                pool.release(c)
    finally:
        pool.disconnect()


async def test_redis_asyncio_pool_replaces_a_connection_redis_closed(
    redis_idle_timeout: Server,
) -> None:
    import redis.asyncio

    from peerwatch.integrations.redis import AsyncCheckedConnection

    pool = redis.asyncio.ConnectionPool(
        host=redis_idle_timeout.address[0],
        port=redis_idle_timeout.port,
        connection_class=AsyncCheckedConnection,
    )
    client = redis.asyncio.Redis(connection_pool=pool)
    try:
        assert await client.ping()
        conn = await pool.get_connection()
        old = conn._writer.get_extra_info("socket")
        await pool.release(conn)
        deadline = time.monotonic() + 5
        while not peerwatch.check(old).dead:
            assert time.monotonic() < deadline
            await __import__("asyncio").sleep(0.02)
        assert await client.ping()
    finally:
        await client.aclose()
        await pool.disconnect()


# --- urllib3 against nginx -----------------------------------------------------------------


def test_urllib3_pool_replaces_keepalive_connections_nginx_closed(nginx_server: Server) -> None:
    """nginx closes idle keep-alive connections after ``keepalive_timeout`` (300 ms here)."""
    pytest.importorskip("urllib3")
    from drivers_kit import connected_sockets

    from peerwatch.integrations.urllib3 import pool_manager

    manager = pool_manager(5, maxsize=BATCH)
    pool = manager.connection_from_url(f"http://{nginx_server.address[0]}:{nginx_server.port}/")
    try:
        for size in rounds(TRIALS):
            # `size` requests in flight at once: the pool then keeps `size` connections
            responses = [pool.urlopen("GET", "/", preload_content=False) for _ in range(size)]
            for response in responses:
                assert response.read() == b"ok\n"
                response.release_conn()
            socks = connected_sockets(nginx_server.address)
            try:
                assert len(socks) == size
                old = {s.getsockname() for s in socks}
                wait_dead(socks)  # nginx closed them: the kernel knows
            finally:
                for s in socks:
                    s.close()
            responses = [pool.urlopen("GET", "/", preload_content=False) for _ in range(size)]
            for response in responses:  # the application: no error
                assert response.read() == b"ok\n"
            socks = connected_sockets(nginx_server.address)
            try:  # each request went out on a new connection, none on a closed one
                new = {s.getsockname() for s in socks}
            finally:
                for s in socks:
                    s.close()
            assert len(new) == size and not new & old
            for response in responses:
                response.release_conn()
    finally:
        manager.clear()
