"""The wire limits of issue 8: each one protects this process or its other peers, precisely.

Items 4 (a cancelled sender passes its wake-up on), 6 (a peer's max_frame floor),
11 (only a solicited PONG is an RTT sample) and 12 (GOODBYE reasons and codes).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator

import pytest
from peerkit import Peer

import peerwatch
from peerwatch import Cause
from peerwatch.core.decoder import Decoder
from peerwatch.core.frames import (
    PROTOCOL_VERSION,
    Goodbye,
    GoodbyeCode,
    Hello,
    Ping,
    encode_data,
    encode_goodbye,
    encode_hello,
    encode_pong,
)

pytestmark = pytest.mark.timeout(60)


def hello(max_frame: int = 1 << 20, max_message: int = 1 << 24) -> bytes:
    return encode_hello(Hello(PROTOCOL_VERSION, 7, 0.2, 1.0, max_frame, max_message))


def goodbyes_after(port: int, payload: bytes, wait: float = 3.0) -> list[Goodbye]:
    """Send raw bytes as a hostile peer; return the GOODBYEs the server sent before closing."""
    frames: list[object] = []
    decoder = Decoder(1 << 22)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(payload)
        sock.settimeout(wait)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            frames += decoder.feed(data)
    return [f for f in frames if isinstance(f, Goodbye)]


async def echo(conn: peerwatch.Connection) -> None:
    async for message in conn:
        await conn.enqueue(message)


@pytest.fixture
async def server() -> AsyncIterator[peerwatch.Server]:
    srv = await peerwatch.serve(
        echo, "127.0.0.1", 0, interval=0.2, timeout=1.0, max_message=100_000
    )
    yield srv
    await srv.shutdown()


async def in_thread(port: int, payload: bytes) -> list[Goodbye]:
    return await asyncio.get_running_loop().run_in_executor(None, goodbyes_after, port, payload)


# --- item 4: a cancelled sender does not swallow a free slot ---------------------------


async def test_a_woken_then_cancelled_sender_passes_the_free_slot_on() -> None:
    release = asyncio.Event()

    async def late_reader(conn: peerwatch.Connection) -> None:
        await release.wait()
        async for _ in conn:
            pass

    srv = await peerwatch.serve(late_reader, "127.0.0.1", 0)
    try:
        conn = await peerwatch.connect("127.0.0.1", srv.port, send_queue=1)
        first = await conn.enqueue(b"first")
        senders = [asyncio.ensure_future(conn.enqueue(b"%d" % i)) for i in range(3)]
        await asyncio.sleep(0.2)
        assert not any(s.done() for s in senders) and conn.in_flight == 1
        release.set()
        await first
        # The ACK woke our wait first and senders[0] second, in that order: senders[0]
        # holds the one free slot but has not run yet. Cancel it now.
        senders[0].cancel()
        delivered = await asyncio.wait_for(senders[1], 5)  # was blocked for ever
        await asyncio.wait_for(delivered, 5)
        await asyncio.wait_for(senders[2], 5)
        assert senders[0].cancelled()
        await asyncio.wait_for(conn.drain(), 5)
        await conn.close()
    finally:
        await srv.shutdown()


async def test_a_sender_cancelled_while_waiting_leaves_the_line() -> None:
    release = asyncio.Event()

    async def late_reader(conn: peerwatch.Connection) -> None:
        await release.wait()
        async for _ in conn:
            pass

    srv = await peerwatch.serve(late_reader, "127.0.0.1", 0)
    try:
        conn = await peerwatch.connect("127.0.0.1", srv.port, send_queue=1)
        await conn.enqueue(b"first")
        for _ in range(100):
            waiting = asyncio.ensure_future(conn.enqueue(b"never"))
            await asyncio.sleep(0)
            waiting.cancel()
            await asyncio.sleep(0)
        assert not conn._waiters._space  # no cancelled waiter kept in line
        release.set()
        await asyncio.wait_for(conn.drain(), 5)
        assert conn.in_flight == 0
        await conn.close()
    finally:
        await srv.shutdown()


# --- item 6: a peer's tiny max_frame is refused, its neighbour never notices -----------


def test_a_tiny_max_frame_is_refused_and_the_neighbour_gets_no_verdict(
    spawn: type[Peer],
) -> None:
    """max_frame 64 made the server echo 1 MiB in 1-byte frames: ~10 s of loop stall."""
    peer = spawn("echo", "--interval", "0.1", "--timeout", "0.6").wait_listening()

    async def scenario() -> None:
        neighbour = await peerwatch.connect("127.0.0.1", peer.port, interval=0.1, timeout=0.6)
        message = b"m" * ((1 << 20) - 100)
        hostile = asyncio.ensure_future(
            in_thread(peer.port, hello(max_frame=64) + encode_data(1, message))
        )
        for i in range(20):  # 2 s of tight heartbeats meanwhile: a stall shows as a verdict
            await neighbour.send(b"%d" % i)
            assert await asyncio.wait_for(neighbour.recv(), 2) == b"%d" % i
            await asyncio.sleep(0.1)
        assert neighbour.verdict is None
        goodbyes = await hostile
        assert [g.code for g in goodbyes] == [GoodbyeCode.PROTOCOL_ERROR]
        assert "max_frame 64, below the floor of 4096 bytes" in goodbyes[0].reason
        await neighbour.close()

    asyncio.run(scenario())


# --- item 11: an unsolicited PONG does not poison the RTT ------------------------------


async def test_unsolicited_pongs_leave_the_rtt_alone(server: peerwatch.Server) -> None:
    accepted: list[peerwatch.Connection] = []
    server.on_connection = accepted.append
    forged = b"".join(encode_pong(i, 1) for i in range(5))  # stamp 1 µs: "sent" at loop start
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(hello() + forged)
        loop = asyncio.get_running_loop()
        for _ in range(100):
            if accepted and accepted[0].bytes_in >= len(hello() + forged):
                break
            await asyncio.sleep(0.02)
        conn = accepted[0]
        assert conn.verdict is None
        assert conn.rtt is None  # was ~loop.time(), thousands of seconds on a long-lived host
        # the server's own PING, answered honestly, still measures the RTT
        decoder = Decoder(1 << 20)
        sock.settimeout(3)
        frames: list[object] = []
        while not any(isinstance(f, Ping) for f in frames):
            frames += decoder.feed(await loop.run_in_executor(None, sock.recv, 65536))
        ping = next(f for f in frames if isinstance(f, Ping))
        sock.sendall(encode_pong(ping.seq, ping.stamp))
        for _ in range(100):
            if conn.rtt is not None:
                break
            await asyncio.sleep(0.02)
        assert conn.rtt is not None and conn.rtt < 1.0


# --- item 12: GOODBYE reasons capped and escaped; MESSAGE_TOO_BIG; max_message 0 -------


async def test_a_goodbye_reason_cannot_forge_or_flood_the_log(
    server: peerwatch.Server, caplog: pytest.LogCaptureFixture
) -> None:
    verdicts: list[peerwatch.Verdict] = []
    server.on_connection = lambda c: c.add_verdict_callback(lambda _, v: verdicts.append(v))
    forged = "bye\n2026-11-30 INFO peerwatch: peer 10.0.0.9: all is well " + "x" * ((1 << 20) - 200)
    body = encode_goodbye(GoodbyeCode.NORMAL, "")  # code only; the reason goes unbounded
    raw = (len(body) - 5 + len(forged.encode())).to_bytes(4, "big") + body[4:] + forged.encode()
    with caplog.at_level(logging.INFO, logger="peerwatch"):
        await in_thread(server.port, hello() + raw)
        for _ in range(100):
            if verdicts:
                break
            await asyncio.sleep(0.02)
    assert verdicts and verdicts[0].cause is Cause.GOODBYE
    reason = verdicts[0].goodbye_reason
    assert reason is not None and reason.startswith("bye\\n2026-11-30")
    assert len(reason) <= 1024
    lines = [r.getMessage() for r in caplog.records if "said goodbye" in r.getMessage()]
    assert len(lines) == 1
    assert "\n" not in lines[0] and len(lines[0]) < 2048


async def test_an_oversized_message_gets_goodbye_message_too_big(
    server: peerwatch.Server,
) -> None:
    goodbyes = await in_thread(server.port, hello() + encode_data(1, b"x" * 100_001))
    assert [g.code for g in goodbyes] == [GoodbyeCode.MESSAGE_TOO_BIG]
    assert "exceeds max_message (100000 bytes)" in goodbyes[0].reason


async def test_a_hello_with_max_message_0_is_refused_with_a_clear_reason(
    server: peerwatch.Server,
) -> None:
    goodbyes = await in_thread(server.port, hello(max_message=0))
    assert [g.code for g in goodbyes] == [GoodbyeCode.PROTOCOL_ERROR]
    assert "max_message 0" in goodbyes[0].reason


# --- item 6: one connection's flush yields the loop after a bounded pass ---------------


async def test_a_flush_of_many_small_messages_yields_the_loop_between_passes() -> None:
    """A pass wrote up to 1 MiB of small frames (13,000 of 78 bytes) before other work ran."""

    async def discard(conn: peerwatch.Connection) -> None:
        async for _ in conn:
            pass

    sink = await peerwatch.serve(discard, "127.0.0.1", 0)
    try:
        await flush_in_bounded_passes(sink.port)
    finally:
        await sink.shutdown()


async def test_close_after_many_queued_messages_yields_the_loop_between_passes() -> None:
    """close() wrote the whole outbox in one pass before its GOODBYE."""

    async def discard(conn: peerwatch.Connection) -> None:
        async for _ in conn:
            pass

    sink = await peerwatch.serve(discard, "127.0.0.1", 0)
    try:
        await flush_in_bounded_passes(sink.port, closing=True)
    finally:
        await sink.shutdown()


async def flush_in_bounded_passes(port: int, *, closing: bool = False) -> None:
    conn = await peerwatch.connect("127.0.0.1", port, send_queue=100_000)
    transport = conn.transport
    assert transport is not None
    real_write = transport.write
    ticks = 0
    written: dict[int, int] = {}  # loop pass -> bytes written in it, once enqueueing ended
    recording = False

    def write(data: bytes | bytearray | memoryview) -> None:
        if recording:
            written[ticks] = written.get(ticks, 0) + len(data)
        real_write(data)

    transport.write = write  # type: ignore[method-assign]
    message = b"m" * 64
    for _ in range(100_000):  # no await: the outbox fills once the transport pauses
        await conn.enqueue(message)
    recording = True
    closed = asyncio.ensure_future(conn.close()) if closing else None
    while conn._protocol.data_pending:
        ticks += 1
        await asyncio.sleep(0)
    frame_size = len(encode_data(1, message))
    assert len(written) > 2
    assert max(written.values()) // frame_size <= 1024 + 1  # FLUSH_FRAMES, and a ping or so
    if closed is None:
        await asyncio.wait_for(conn.drain(), 20)
        await conn.close()
    else:
        verdict = await asyncio.wait_for(closed, 20)
        assert verdict.cause is Cause.LOCAL
