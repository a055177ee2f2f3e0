"""Resumable sessions on real loopback sockets: exactly once, in order, across reconnects."""

from __future__ import annotations

import asyncio

import pytest
from resumekit import Cutter

import peerwatch
from peerwatch import Cause, ResumableConnection

pytestmark = pytest.mark.timeout(60)

FAST = {"interval": 0.2, "timeout": 1.0}


async def echo(session: ResumableConnection) -> None:
    async for message in session:
        await session.enqueue(message)


async def test_a_session_carries_messages_both_ways_and_close_ends_it_on_both_sides() -> None:
    ended: list[peerwatch.Verdict] = []

    async def handler(session: ResumableConnection) -> None:
        try:
            await echo(session)
        finally:
            ended.append(await session.wait_closed())

    async with peerwatch.serve(handler, "127.0.0.1", 0, resume_window=5.0, **FAST) as server:
        async with peerwatch.connect("127.0.0.1", server.port, resume=True, **FAST) as conn:
            assert conn.session_id is not None and len(conn.session_id) == 16
            await conn.send(b"hello")
            assert await conn.recv() == b"hello"
        assert conn.verdict is not None and conn.verdict.cause is Cause.LOCAL
        for _ in range(100):
            if ended:
                break
            await asyncio.sleep(0.02)
        assert ended and ended[0].cause is Cause.GOODBYE
        assert conn.history == []


async def test_connections_cut_mid_stream_lose_and_repeat_nothing_in_either_direction() -> None:
    count = 3000
    received_by_server: list[bytes] = []

    async def handler(session: ResumableConnection) -> None:
        async for message in session:
            received_by_server.append(message)
            await session.enqueue(b"echo " + message)

    async with (
        peerwatch.serve(handler, "127.0.0.1", 0, resume_window=10.0, **FAST) as server,
        Cutter(server.port) as cutter,
    ):
        conn = await peerwatch.connect(
            "127.0.0.1", cutter.port, resume=True, resume_timeout=10.0, **FAST
        )
        events: list[object] = []
        conn.subscribe(events.append)
        # every 300th message spans three 64 KiB chunks: a cut may fall inside one
        sent = [b"%d" % i + b"x" * (150_000 if i % 300 == 7 else i % 700) for i in range(count)]

        async def produce() -> None:
            for message in sent:
                await conn.enqueue(message)

        async def cut_repeatedly() -> None:
            for _ in range(8):
                await asyncio.sleep(0.03)
                while not conn.connected:  # cut each new connection once it carries the session
                    await asyncio.sleep(0.005)
                cutter.cut()

        producer = asyncio.ensure_future(produce())
        cutting = asyncio.ensure_future(cut_repeatedly())
        echoes = [await conn.recv() for _ in range(count)]
        await producer
        await cutting
        await conn.drain()
        for _ in range(250):  # the last cut may still be on its way to the client's kernel
            if len(conn.history) == 8 and conn.connected:
                break
            await asyncio.sleep(0.02)
        assert received_by_server == sent  # exactly once, in order, client -> server
        assert echoes == [b"echo " + m for m in sent]  # and server -> client
        assert len(conn.history) == 8 and cutter.cuts == 8
        assert all(o.verdict.cause is Cause.RESET for o in conn.history), conn.history
        assert all(o.outage is not None and o.outage < 5.0 for o in conn.history)
        # how much each cut left to resend depends on where it fell: on a quiet machine the
        # stream can be delivered between two cuts (nothing resent in 2 of 3 fresh-clone
        # runs), so the resend itself is asserted where it is certain (the partition test)
        assert [type(e).__name__ for e in events] == ["Lost", "Resumed"] * 8
        await conn.close()


async def test_a_partition_past_the_timeout_ends_the_connection_then_resumes_exactly_once() -> None:
    got: list[bytes] = []

    async def collect(session: ResumableConnection) -> None:
        async for message in session:
            got.append(message)
            await session.enqueue(message)

    settings = {**FAST, "handshake_timeout": 1.0}
    async with (
        peerwatch.serve(collect, "127.0.0.1", 0, resume_window=10.0, **settings) as server,
        Cutter(server.port) as cutter,
    ):
        conn = await peerwatch.connect(
            "127.0.0.1", cutter.port, resume=True, resume_timeout=10.0, **settings
        )
        sent = [b"p%d" % i for i in range(200)]
        for message in sent[:100]:
            await conn.enqueue(message)
        cutter.hold()  # the cable is pulled: nothing passes, nothing is closed
        for message in sent[100:]:
            await conn.enqueue(message)
        await asyncio.sleep(2.0)  # twice the heartbeat timeout
        assert not conn.connected
        cutter.release()
        echoes = [await conn.recv() for _ in range(200)]
        assert got == sent and echoes == sent
        # the middlebox's kernel still acknowledges what it holds: HUNG, not SILENT
        assert conn.history[0].verdict.cause in (Cause.HUNG, Cause.SILENT)
        assert conn.history[0].replayed > 0
        await conn.close()


async def test_a_client_back_before_the_server_saw_it_go_takes_its_session_over() -> None:
    sessions: list[ResumableConnection] = []
    got: list[bytes] = []

    async def collect(session: ResumableConnection) -> None:
        sessions.append(session)
        async for message in session:
            got.append(message)
            await session.enqueue(message)

    # the server would wait 20 s before judging the old connection; the client judges in 1 s
    async with (
        peerwatch.serve(
            collect, "127.0.0.1", 0, resume_window=30.0, interval=0.5, timeout=20.0
        ) as server,
        Cutter(server.port) as cutter,
    ):
        conn = await peerwatch.connect(
            "127.0.0.1", cutter.port, resume=True, handshake_timeout=1.0, **FAST
        )
        await conn.send(b"one")
        assert await conn.recv() == b"one"
        await conn.enqueue(b"two")
        cutter.cut_client_side()
        assert await conn.recv() == b"two"
        assert got == [b"one", b"two"] and len(sessions) == 1
        (outage,) = sessions[0].history
        assert outage.verdict.cause is Cause.LOCAL
        assert "resumed the session on a new connection" in outage.verdict.detail
        await conn.close()


async def test_a_send_whose_ack_was_lost_returns_when_the_peers_resume_acknowledges_it() -> None:
    got: list[bytes] = []

    async def take(session: ResumableConnection) -> None:
        async for message in session:
            got.append(message)

    async with (
        peerwatch.serve(take, "127.0.0.1", 0, resume_window=10.0, **FAST) as server,
        Cutter(server.port) as cutter,
    ):
        conn = await peerwatch.connect("127.0.0.1", cutter.port, resume=True, **FAST)
        cutter.hold_replies()  # the server's ACK will never reach this connection
        sending = asyncio.ensure_future(conn.send(b"taken, ACK lost"))
        while not got:
            await asyncio.sleep(0.01)
        cutter.cut()
        cutter.release()
        # the server's RESUME says it took message 1: that is the acknowledgement
        await asyncio.wait_for(sending, 5.0)
        assert got == [b"taken, ACK lost"] and conn.acked_through == 1
        assert conn.history[0].replayed == 0
        await conn.close()
