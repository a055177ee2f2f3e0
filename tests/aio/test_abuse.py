"""A peer that breaks the protocol ends its own connection, precisely, and no other."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

import peerwatch
from peerwatch import Cause
from peerwatch.core.decoder import Decoder
from peerwatch.core.frames import (
    HEADER,
    PROTOCOL_VERSION,
    Goodbye,
    GoodbyeCode,
    Hello,
    Kind,
    encode_ack,
    encode_data,
    encode_hello,
    encode_ping,
)

pytestmark = pytest.mark.timeout(60)

HELLO = encode_hello(Hello(PROTOCOL_VERSION, 42, 0.2, 1.0, 1 << 20, 1 << 20))


async def echo(conn: peerwatch.Connection) -> None:
    async for message in conn:
        await conn.enqueue(message)


@pytest.fixture
async def server() -> AsyncIterator[tuple[peerwatch.Server, list[peerwatch.Connection]]]:
    accepted: list[peerwatch.Connection] = []
    srv = await peerwatch.serve(
        echo,
        "127.0.0.1",
        0,
        interval=0.2,
        timeout=1.0,
        handshake_timeout=0.5,
        max_message=100_000,
        max_pings_per_interval=5,
        on_connection=accepted.append,
    )
    yield srv, accepted
    await srv.shutdown()


def raw_exchange(port: int, payload: bytes, wait: float = 3.0) -> list[object]:
    """Send raw bytes as a misbehaving peer; return every frame the server sent until EOF."""
    frames: list[object] = []
    decoder = Decoder(1 << 22)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(payload)
        sock.settimeout(wait)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            frames += decoder.feed(data)
    return frames


BAD = {
    "unknown-kind": HELLO + HEADER.pack(0, 42),
    "oversized-frame": HELLO + HEADER.pack(5_000_000, Kind.DATA),
    "ack-never-sent": HELLO + encode_ack(7),
    "sequence-gap": HELLO + encode_data(2, b"x"),
    "hello-twice": HELLO + HELLO,
    "data-before-hello": encode_data(1, b"x"),
    "message-too-big": HELLO + b"".join(encode_data(1, b"x" * 60_000, True) for _ in range(2)),
    "not-peerwatch": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(40),
    "ping-flood": HELLO + b"".join(encode_ping(i, i) for i in range(50)),
}
EXPECT = {
    "unknown-kind": "unknown frame kind 42",
    "oversized-frame": "exceeds max_frame",
    "ack-never-sent": "ACK for sequence 7",
    "sequence-gap": "DATA with sequence 2, expected 1",
    "hello-twice": "HELLO received twice",
    "data-before-hello": "expected HELLO first",
    "message-too-big": "exceeds max_message",
    "not-peerwatch": "",
    "ping-flood": "too many pings",
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_violation_gets_goodbye_and_cause_protocol_only_for_that_peer(
    server: tuple[peerwatch.Server, list[peerwatch.Connection]], case: str
) -> None:
    srv, _accepted = server
    good = await peerwatch.connect("127.0.0.1", srv.port, interval=0.2, timeout=1.0)
    frames = await asyncio.get_running_loop().run_in_executor(
        None, raw_exchange, srv.port, BAD[case]
    )
    goodbyes = [f for f in frames if isinstance(f, Goodbye)]
    assert len(goodbyes) == 1, frames
    want = {
        "ping-flood": GoodbyeCode.TOO_MANY_PINGS,
        "message-too-big": GoodbyeCode.MESSAGE_TOO_BIG,
    }.get(case, GoodbyeCode.PROTOCOL_ERROR)
    assert goodbyes[0].code is want
    assert EXPECT[case] in goodbyes[0].reason
    # the well-behaved neighbour did not notice a thing
    await good.send(b"still fine")
    assert await asyncio.wait_for(good.recv(), 5) == b"still fine"
    assert good.verdict is None
    await good.close()


async def test_server_side_verdict_names_the_violation(
    server: tuple[peerwatch.Server, list[peerwatch.Connection]],
) -> None:
    srv, _ = server
    seen: list[peerwatch.Verdict] = []

    def watch(conn: peerwatch.Connection) -> None:
        conn.add_verdict_callback(lambda _, v: seen.append(v))

    srv.on_connection = watch
    await asyncio.get_running_loop().run_in_executor(
        None, raw_exchange, srv.port, HELLO + encode_ack(3)
    )
    for _ in range(50):
        if seen:
            break
        await asyncio.sleep(0.05)
    assert seen and seen[0].cause is Cause.PROTOCOL
    assert "ACK for sequence 3" in seen[0].detail


async def test_peer_vanishing_mid_message_is_eof_for_that_connection_only(
    server: tuple[peerwatch.Server, list[peerwatch.Connection]],
) -> None:
    srv, accepted = server
    good = await peerwatch.connect("127.0.0.1", srv.port, interval=0.2, timeout=1.0)
    half = encode_data(1, b"y" * 1000)[:500]
    with socket.create_connection(("127.0.0.1", srv.port)) as sock:
        sock.sendall(HELLO + half)
        await asyncio.sleep(0.2)
    for _ in range(50):
        broken = [c for c in accepted if c.verdict is not None]
        if broken:
            break
        await asyncio.sleep(0.05)
    assert len(broken) == 1 and broken[0].verdict is not None
    # FIN, or RST because our HELLO was left unread: either way the peer is gone
    assert broken[0].verdict.cause in (Cause.EOF, Cause.RESET)
    assert "mid-message: 500 bytes of an unfinished frame" in broken[0].verdict.detail
    await good.send(b"ok")
    assert await good.recv() == b"ok"
    await good.close()


async def test_silent_client_is_dropped_at_the_handshake_timeout(
    server: tuple[peerwatch.Server, list[peerwatch.Connection]],
) -> None:
    srv, _ = server
    started = time.monotonic()
    frames = await asyncio.get_running_loop().run_in_executor(None, raw_exchange, srv.port, b"")
    elapsed = time.monotonic() - started
    goodbyes = [f for f in frames if isinstance(f, Goodbye)]
    assert goodbyes and goodbyes[0].code is GoodbyeCode.HANDSHAKE_TIMEOUT
    assert 0.5 <= elapsed < 2.5


async def test_connect_to_a_mute_server_fails_at_the_handshake_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as mute:
        port = mute.getsockname()[1]
        with pytest.raises(peerwatch.HandshakeFailed) as raised:
            await peerwatch.connect("127.0.0.1", port, interval=0.2, timeout=1.0,
                                    handshake_timeout=0.5)  # fmt: skip
    assert "no HELLO" in raised.value.verdict.detail


async def test_refused_connection_is_a_reset_verdict() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: the kernel answers RST
        with pytest.raises(peerwatch.PeerDead) as raised:
            await peerwatch.connect("127.0.0.1", port)
    assert raised.value.verdict.cause is Cause.RESET
    assert raised.value.verdict.errno == "ECONNREFUSED"


async def test_max_connections_refuses_cleanly() -> None:
    srv = await peerwatch.serve(echo, "127.0.0.1", 0, max_connections=1)
    first = await peerwatch.connect("127.0.0.1", srv.port)
    second = await peerwatch.connect("127.0.0.1", srv.port)
    verdict = await asyncio.wait_for(second.wait_closed(), 5)
    assert verdict.cause is Cause.GOODBYE and "too many connections" in verdict.detail
    await first.send(b"served")
    assert await first.recv() == b"served"
    await first.close()
    await srv.shutdown()


async def test_send_queue_bound_applies_backpressure() -> None:
    release = asyncio.Event()

    async def late_reader(conn: peerwatch.Connection) -> None:
        await release.wait()
        async for _ in conn:
            pass

    srv = await peerwatch.serve(late_reader, "127.0.0.1", 0)
    conn = await peerwatch.connect("127.0.0.1", srv.port, send_queue=4)
    for i in range(4):
        await conn.enqueue(b"%d" % i)
    blocked = asyncio.ensure_future(conn.enqueue(b"five"))
    await asyncio.sleep(0.3)
    assert not blocked.done() and conn.in_flight == 4
    release.set()
    delivery = await asyncio.wait_for(blocked, 5)
    await asyncio.wait_for(delivery, 5)
    await conn.close()
    await srv.shutdown()
