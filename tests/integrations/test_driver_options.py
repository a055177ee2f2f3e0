"""Each integration puts keepalive and TCP_USER_TIMEOUT on the driver's real socket.

Real drivers against real servers on loopback (session fixtures in conftest.py);
the options are read back from the kernel through /proc/self/fd, and each test
first shows the driver's socket without the integration, so it can fail.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from drivers_kit import expected, guarded, sockets_to

from peerwatch.testing.servers import Server

TIMEOUT = 5.0
WANT = expected(TIMEOUT)


def only(address: tuple[str, int]) -> Any:
    found = sockets_to(address)
    assert len(found) == 1, found
    return found[0]


def test_psycopg_connect_options(postgres_server: Server) -> None:
    psycopg = pytest.importorskip("psycopg")
    from peerwatch.integrations.psycopg import connect_options

    with psycopg.connect(postgres_server.extra["dsn"]):
        assert only(postgres_server.address).user_timeout_ms == 0
    with psycopg.connect(postgres_server.extra["dsn"], **connect_options(TIMEOUT)):
        assert only(postgres_server.address) == WANT


async def test_asyncpg_guard_and_pool_init(postgres_server: Server) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    from peerwatch.integrations.asyncpg import guard_connection, pool_init

    host, port = postgres_server.address
    conn = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres")
    try:
        assert only(postgres_server.address).keepalive == 0
        guard_connection(conn, TIMEOUT)
        assert guarded(only(postgres_server.address), TIMEOUT)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        host=host, port=port, user="postgres", database="postgres", min_size=2, max_size=2,
        init=pool_init(TIMEOUT),
    )  # fmt: skip
    try:
        async with pool.acquire() as c:
            assert await c.fetchval("SELECT 1") == 1
        found = sockets_to(postgres_server.address)
        assert len(found) == 2 and all(guarded(o, TIMEOUT) for o in found), found
    finally:
        await pool.close()


def test_redis_connection_options(redis_server: Server) -> None:
    redis = pytest.importorskip("redis")
    from peerwatch.integrations.redis import connection_options

    plain = redis.Redis(*redis_server.address)
    plain.ping()
    assert only(redis_server.address).user_timeout_ms == 0  # redis-py's own keepalive only
    plain.close()
    r = redis.Redis(*redis_server.address, **connection_options(TIMEOUT))
    try:
        r.ping()
        assert only(redis_server.address) == WANT
    finally:
        r.close()


async def test_redis_asyncio_connection_options(redis_server: Server) -> None:
    redis_asyncio = pytest.importorskip("redis.asyncio")
    from peerwatch.integrations.redis import connection_options

    host, port = redis_server.address
    r = redis_asyncio.Redis(host=host, port=port, **connection_options(TIMEOUT))
    try:
        await r.ping()
        assert only(redis_server.address) == WANT
    finally:
        await r.aclose()


def test_urllib3_pool_manager(nginx_server: Server) -> None:
    urllib3 = pytest.importorskip("urllib3")
    from peerwatch.integrations.urllib3 import pool_manager

    url = f"http://{nginx_server.address[0]}:{nginx_server.port}/"
    plain = urllib3.PoolManager()
    assert plain.request("GET", url).status == 200
    assert only(nginx_server.address).keepalive == 0
    plain.clear()
    http = pool_manager(TIMEOUT)
    assert http.request("GET", url).status == 200
    assert only(nginx_server.address) == WANT
    http.clear()


def test_requests_adapter(nginx_server: Server) -> None:
    requests = pytest.importorskip("requests")
    from peerwatch.integrations.requests import ProtectedAdapter

    with requests.Session() as session:
        session.mount("http://", ProtectedAdapter(TIMEOUT))
        url = f"http://{nginx_server.address[0]}:{nginx_server.port}/"
        assert session.get(url).text == "ok\n"
        assert only(nginx_server.address) == WANT


def test_httpx_transport(nginx_server: Server) -> None:
    httpx = pytest.importorskip("httpx")
    from peerwatch.integrations.httpx import transport

    url = f"http://{nginx_server.address[0]}:{nginx_server.port}/"
    with httpx.Client(transport=transport(TIMEOUT)) as client:
        assert client.get(url).text == "ok\n"
        assert only(nginx_server.address) == WANT


async def test_httpx_async_transport(nginx_server: Server) -> None:
    httpx = pytest.importorskip("httpx")
    from peerwatch.integrations.httpx import async_transport

    url = f"http://{nginx_server.address[0]}:{nginx_server.port}/"
    async with httpx.AsyncClient(transport=async_transport(TIMEOUT)) as client:
        assert (await client.get(url)).text == "ok\n"
        assert only(nginx_server.address) == WANT


async def test_aiohttp_connector(nginx_server: Server) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    from peerwatch.integrations.aiohttp import connector

    url = f"http://{nginx_server.address[0]}:{nginx_server.port}/"
    async with aiohttp.ClientSession(connector=connector(TIMEOUT)) as session:
        async with session.get(url) as response:
            assert await response.text() == "ok\n"
        assert only(nginx_server.address) == WANT


@pytest.mark.slow
def test_pika_tcp_options(rabbitmq_server: Server) -> None:
    pika = pytest.importorskip("pika")
    from peerwatch.integrations.pika import tcp_options

    host, port = rabbitmq_server.address
    params = pika.ConnectionParameters(host, port, tcp_options=tcp_options(TIMEOUT))
    conn = pika.BlockingConnection(params)
    try:
        assert only(rabbitmq_server.address) == WANT
    finally:
        conn.close()


@pytest.mark.slow
def test_amqp_and_kombu_socket_settings(rabbitmq_server: Server) -> None:
    amqp = pytest.importorskip("amqp")
    kombu = pytest.importorskip("kombu")
    from peerwatch.integrations.amqp import socket_settings

    host, port = rabbitmq_server.address
    plain = amqp.Connection(f"{host}:{port}")
    plain.connect()
    assert only(rabbitmq_server.address).user_timeout_ms == 1000  # py-amqp's own default
    plain.close()
    conn = amqp.Connection(f"{host}:{port}", socket_settings=socket_settings(TIMEOUT))
    conn.connect()
    try:
        assert only(rabbitmq_server.address) == WANT
    finally:
        conn.close()
    with kombu.Connection(
        f"amqp://guest:guest@{host}:{port}//",
        transport_options={"socket_settings": socket_settings(TIMEOUT)},
    ) as k:
        k.connect()
        assert only(rabbitmq_server.address) == WANT


async def test_nats_connect_guards_the_socket(nats_server: Server) -> None:
    pytest.importorskip("nats")
    import nats

    from peerwatch.integrations.nats import connect

    url = f"nats://{nats_server.address[0]}:{nats_server.port}"
    plain = await nats.connect(url)
    assert only(nats_server.address).keepalive == 0
    await plain.close()
    nc = await connect([url], TIMEOUT)
    try:
        assert guarded(only(nats_server.address), TIMEOUT)
        await nc.flush()
    finally:
        await nc.close()
    await asyncio.sleep(0)
