"""``batch_pings`` on real loopback sockets: the server does the pinging, its peerwatch
clients never ping and stay alive, and a peer that stops answering is judged as before."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

import peerwatch
from peerwatch import Cause
from peerwatch.core.frames import PROTOCOL_VERSION, Hello, encode_hello

pytestmark = pytest.mark.timeout(60)

FAST = {"interval": 0.2, "timeout": 1.0}


async def hold(conn: peerwatch.Connection) -> None:
    await conn.wait_closed()


@pytest.fixture
async def batched() -> AsyncIterator[tuple[peerwatch.Server, list[peerwatch.Connection]]]:
    accepted: list[peerwatch.Connection] = []
    server = await peerwatch.serve(
        hold, "127.0.0.1", 0, batch_pings=True, on_connection=accepted.append, **FAST
    )
    yield server, accepted
    await server.shutdown()


async def test_the_server_pings_its_clients_and_they_never_ping(
    batched: tuple[peerwatch.Server, list[peerwatch.Connection]],
) -> None:
    server, accepted = batched
    clients = [await peerwatch.connect("127.0.0.1", server.port, **FAST) for _ in range(5)]
    await asyncio.sleep(2.0)  # ten intervals
    assert len(accepted) == 5
    for client in clients:
        assert client.verdict is None
        assert client.pings_sent == 0
        assert client.pings_received >= 5
    for conn in accepted:
        assert conn.verdict is None
        assert conn.pings_sent >= 5
        assert conn.rtt is not None  # its PONGs come back and are timed
    for client in clients:
        await client.close()


async def test_a_client_that_stops_answering_is_hung_in_time_and_no_other_is_touched(
    batched: tuple[peerwatch.Server, list[peerwatch.Connection]],
) -> None:
    server, accepted = batched
    healthy = await peerwatch.connect("127.0.0.1", server.port, **FAST)
    loop = asyncio.get_running_loop()
    # a peer whose kernel stays up and whose application never answers a PING
    with socket.create_connection(("127.0.0.1", server.port)) as mute:
        mute.sendall(encode_hello(Hello(PROTOCOL_VERSION, 42, 0.2, 1.0, 1 << 20, 1 << 20)))
        said_hello_at = loop.time()
        for _ in range(100):
            if len(accepted) == 2 and all(c.peer_hello is not None for c in accepted):
                break
            await asyncio.sleep(0.02)
        victim = next(c for c in accepted if c.peer[1] == mute.getsockname()[1])  # type: ignore[index]
        verdict = await asyncio.wait_for(victim.wait_closed(), 5)
    assert verdict.cause is Cause.HUNG, verdict.describe()
    assert 1.0 <= verdict.silent_for <= 1.3
    assert verdict.detected_at - said_hello_at <= 1.0 + 0.5
    assert victim.pings_sent >= 3  # it was pinged, ahead of its own interval, and never answered
    await asyncio.sleep(0.5)
    assert healthy.verdict is None and healthy.pings_sent == 0
    await healthy.close()


async def test_a_plain_server_is_pinged_by_its_clients_as_before() -> None:
    accepted: list[peerwatch.Connection] = []
    server = await peerwatch.serve(hold, "127.0.0.1", 0, on_connection=accepted.append, **FAST)
    try:
        client = await peerwatch.connect("127.0.0.1", server.port, **FAST)
        await asyncio.sleep(1.0)
        assert client.pings_sent >= 3 and accepted[0].pings_sent == 0
        await client.close()
    finally:
        await server.shutdown()
