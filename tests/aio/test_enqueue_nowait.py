"""``enqueue_nowait``: the fire-and-forget send without a coroutine or a ``Delivery``.

It follows the rules of ``await enqueue`` on real loopback connections: order (mixed with
``enqueue`` too), the send window (``send_queue`` messages, ``send_buffer`` bytes) where it
raises ``QueueFull`` at once and queues nothing, acknowledged delivery through
``wait_acked``, a server's memory budget, and the verdict.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

import peerwatch
from peerwatch.aio.connection import EAGER_FLUSH
from peerwatch.core.verdicts import Cause

pytestmark = pytest.mark.timeout(30)

Handler = Callable[[peerwatch.Connection], Awaitable[None]]


@asynccontextmanager
async def serving(handler: Handler, **settings: int) -> AsyncIterator[peerwatch.Server]:
    srv = await peerwatch.serve(handler, "127.0.0.1", 0, **settings)  # type: ignore[arg-type]
    try:
        yield srv
    finally:
        await srv.shutdown()


async def test_messages_arrive_in_order_mixed_with_enqueue_and_are_acknowledged() -> None:
    got: list[bytes] = []
    count = 3_000  # several send windows (1,024) and eager flushes (256)

    async def handler(conn: peerwatch.Connection) -> None:
        async for message in conn:
            got.append(message)

    async with serving(handler) as srv:
        conn = await peerwatch.connect("127.0.0.1", srv.port)
        seqs: list[int] = []
        for i in range(count):
            payload = i.to_bytes(4, "big")
            if i % 7 == 3:  # the awaiting API in between keeps the one sequence
                seqs.append((await conn.enqueue(payload)).seq)
                continue
            try:
                seqs.append(conn.enqueue_nowait(payload))
            except peerwatch.QueueFull:  # the documented fallback: wait for room
                seqs.append((await conn.enqueue(payload)).seq)
        assert seqs == list(range(1, count + 1))
        await asyncio.wait_for(conn.wait_acked(seqs[-1]), 10)
        assert conn.acked_through == count and conn.in_flight == 0
        await conn.close()
        assert got == [i.to_bytes(4, "big") for i in range(count)]


@asynccontextmanager
async def _stalled_peer(
    **settings: int,
) -> AsyncIterator[tuple[peerwatch.Connection, asyncio.Event]]:
    """A client whose server takes nothing (so ACKs nothing) until the event is set."""
    release = asyncio.Event()

    async def handler(conn: peerwatch.Connection) -> None:
        await release.wait()
        async for _ in conn:
            pass

    async with serving(handler) as srv:
        conn = await peerwatch.connect("127.0.0.1", srv.port, **settings)  # type: ignore[arg-type]
        try:
            yield conn, release
        finally:
            await conn.close()


async def test_a_full_send_queue_raises_at_once_and_queues_nothing() -> None:
    async with _stalled_peer(send_queue=8) as (conn, release):
        seqs = [conn.enqueue_nowait(b"m") for _ in range(8)]
        assert seqs == list(range(1, 9))
        with pytest.raises(peerwatch.QueueFull, match="send_queue 8"):
            conn.enqueue_nowait(b"m")
        assert conn.in_flight == 8 and conn._protocol.outbound.next_seq == 9  # nothing queued
        # the same rule as enqueue's: it waits where enqueue_nowait raised
        waiting = asyncio.ensure_future(conn.enqueue(b"m"))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        release.set()  # the server takes the 8: its ACK makes room
        assert (await asyncio.wait_for(waiting, 5)).seq == 9
        assert conn.enqueue_nowait(b"m") == 10


async def test_the_byte_window_is_the_same_rule() -> None:
    async with _stalled_peer(send_buffer=10_000) as (conn, release):
        assert conn.enqueue_nowait(b"a" * 6_000) == 1
        with pytest.raises(peerwatch.QueueFull):
            conn.enqueue_nowait(b"b" * 6_000)  # 12,000 unacknowledged bytes: over
        assert conn.enqueue_nowait(b"c" * 4_000) == 2  # exactly the budget fits
        release.set()
        await asyncio.wait_for(conn.drain(), 5)
        # a single message larger than the whole budget still goes, alone
        assert conn.enqueue_nowait(b"d" * 20_000) == 3


async def test_after_the_verdict_it_raises_the_verdicts_error() -> None:
    async def handler(conn: peerwatch.Connection) -> None:
        await conn.wait_closed()

    async with serving(handler) as srv:
        conn = await peerwatch.connect("127.0.0.1", srv.port)
        await conn.close("bye")
        with pytest.raises(peerwatch.ConnectionClosed) as closed:
            conn.enqueue_nowait(b"late")
        assert closed.value.verdict.cause is Cause.LOCAL


async def test_a_server_connection_counts_it_in_the_memory_budget() -> None:
    held: list[int] = []
    used: list[int] = []

    async def handler(conn: peerwatch.Connection) -> None:
        before = conn.held_bytes
        conn.enqueue_nowait(b"z" * 3_000)
        held.append(conn.held_bytes - before)
        used.append(srv.budget.used)
        await conn.drain()
        await conn.wait_closed()

    async with serving(handler) as srv:
        conn = await peerwatch.connect("127.0.0.1", srv.port)
        assert await asyncio.wait_for(conn.recv(), 5) == b"z" * 3_000
        assert held == [3_000] and used[0] >= 3_000
        await conn.close()


async def test_a_producer_that_never_yields_gets_written_every_eager_flush_messages() -> None:
    """The peer must read (and ACK) while a producer that does not yield keeps queueing."""
    async with _stalled_peer() as (conn, release):
        for send in ("nowait", "await"):
            before = conn.bytes_out
            for _ in range(EAGER_FLUSH - 1):  # no loop pass in between: nothing written yet
                conn.enqueue_nowait(b"p") if send == "nowait" else await conn.enqueue(b"p")
            assert conn.bytes_out == before, send
            conn.enqueue_nowait(b"p") if send == "nowait" else await conn.enqueue(b"p")
            assert conn.bytes_out > before + EAGER_FLUSH, send  # the lot, written at once
            await asyncio.sleep(0.05)  # the pass scheduled by the first of them ran
            release.set()
