"""How resumable sessions end when they cannot go on: the exact tail handed back, every time."""

from __future__ import annotations

import asyncio

import pytest
from resumekit import Cutter
from waiting import eventually

import peerwatch
from peerwatch import Cause, PeerDead, ResumableConnection

pytestmark = pytest.mark.timeout(60)

FAST = {"interval": 0.2, "timeout": 1.0}


async def test_a_server_restart_without_a_shared_store_hands_back_exactly_the_untaken_tail() -> (
    None
):
    taken: list[bytes] = []
    take = 40

    async def slow_taker(session: ResumableConnection) -> None:
        for _ in range(take):
            taken.append(await session.recv())
        await asyncio.Event().wait()  # then takes nothing more: the rest stays unacknowledged

    first = await peerwatch.serve(slow_taker, "127.0.0.1", 0, resume_window=10.0, **FAST)
    async with Cutter(first.port) as cutter:
        conn = await peerwatch.connect(
            "127.0.0.1", cutter.port, resume=True, resume_timeout=10.0, **FAST
        )
        sent = [b"m%d" % i for i in range(100)]
        deliveries = [await conn.enqueue(m) for m in sent]
        await deliveries[take - 1]
        await first.shutdown()  # the process's sessions die with it
        second = await peerwatch.serve(slow_taker, "127.0.0.1", 0, resume_window=10.0, **FAST)
        try:
            cutter.target_port = second.port  # the restarted server, at the same address
            with pytest.raises(PeerDead) as caught:
                await conn.drain()
        finally:
            await second.shutdown()
    verdict = caught.value.verdict
    assert verdict.cause is Cause.SESSION_LOST and verdict.detail.startswith("UNKNOWN: ")
    acknowledged = sent[: conn.acked_through]
    assert acknowledged == taken == sent[:take]
    assert list(verdict.undelivered) == sent[take:]  # acknowledged + handed back == sent
    assert conn.lost is not None and conn.lost.first_seq == take + 1
    assert [d.acknowledged for d in deliveries] == [True] * take + [False] * (100 - take)
    with pytest.raises(PeerDead):
        await conn.recv()


async def test_resume_timeout_ends_the_session_with_what_was_enqueued_while_away() -> None:
    async def echo(session: ResumableConnection) -> None:
        async for message in session:
            await session.enqueue(message)

    async with (
        peerwatch.serve(echo, "127.0.0.1", 0, resume_window=10.0, **FAST) as server,
        Cutter(server.port) as cutter,
    ):
        conn = await peerwatch.connect(
            "127.0.0.1", cutter.port, resume=True, resume_timeout=1.0, **FAST
        )
        await conn.send(b"before")
        assert await conn.recv() == b"before"
        cutter.refusing = True
        cutter.cut()
        await eventually(lambda: not conn.connected)
        lost_at = asyncio.get_running_loop().time()
        away = [await conn.enqueue(b"while away %d" % i) for i in range(3)]
        with pytest.raises(PeerDead) as caught:
            await conn.recv()
        waited = asyncio.get_running_loop().time() - lost_at
    verdict = caught.value.verdict
    assert verdict.cause is Cause.SESSION_LOST and verdict.detail.startswith("WINDOW: ")
    assert verdict.undelivered == (b"while away 0", b"while away 1", b"while away 2")
    assert not any(d.acknowledged for d in away)
    assert 0.9 <= waited <= 3.0, waited  # resume_timeout 1.0 s, generous margin above
    assert conn.attempts >= 2  # it did try again (backoff), against a peer that resets
    assert len(conn.history) == 1 and conn.history[0].resumed_at is None


async def test_resume_window_expiry_ends_the_servers_session_and_then_the_clients() -> None:
    server_saw: list[PeerDead] = []

    async def sender(session: ResumableConnection) -> None:
        await session.send(b"taken")
        await session.enqueue(b"never taken")
        try:
            await session.recv()
        except PeerDead as dead:
            server_saw.append(dead)

    async with (
        peerwatch.serve(sender, "127.0.0.1", 0, resume_window=0.5, **FAST) as server,
        Cutter(server.port) as cutter,
    ):
        conn = await peerwatch.connect(
            "127.0.0.1", cutter.port, resume=True, resume_timeout=30.0, **FAST
        )
        assert await conn.recv() == b"taken"
        await eventually(lambda: conn.session.inbox == 1)  # "never taken" is here, not taken
        cutter.refusing = True
        cutter.cut()
        await eventually(lambda: bool(server_saw), 10.0)
        cutter.refusing = False  # the client comes back: too late
        with pytest.raises(PeerDead) as caught:
            await conn.send(b"late")
    server_verdict = server_saw[0].verdict
    assert server_verdict.cause is Cause.SESSION_LOST
    assert server_verdict.detail.startswith("WINDOW: ")
    assert server_verdict.undelivered == (b"never taken",)
    client_verdict = caught.value.verdict
    assert client_verdict.detail.startswith("UNKNOWN: ")
    assert client_verdict.undelivered == (b"late",)


async def test_close_with_messages_unacknowledged_hands_them_back_and_ends_the_peers_session() -> (
    None
):
    server_saw: list[PeerDead] = []

    async def never_takes(session: ResumableConnection) -> None:
        await session.send(b"from the server")
        server_saw.append(PeerDead(await session.wait_closed()))  # takes nothing meanwhile

    async with peerwatch.serve(
        never_takes, "127.0.0.1", 0, resume_window=5.0, close_timeout=0.3, **FAST
    ) as server:
        conn = await peerwatch.connect(
            "127.0.0.1", server.port, resume=True, close_timeout=0.3, **FAST
        )
        assert await conn.recv() == b"from the server"
        for i in range(3):
            await conn.enqueue(b"unread %d" % i)
        verdict = await conn.close("done")
        assert verdict.cause is Cause.LOCAL
        assert verdict.undelivered == (b"unread 0", b"unread 1", b"unread 2")
        await eventually(lambda: bool(server_saw))
    theirs = server_saw[0].verdict
    assert theirs.cause is Cause.SESSION_LOST and theirs.detail.startswith("PEER_LOST: ")
    assert theirs.undelivered == ()  # its one message was taken and acknowledged


async def test_close_with_messages_not_taken_hands_them_back_to_the_peer_not_lost_silently() -> (
    None
):
    server_saw: list[PeerDead] = []

    async def sends_and_waits(session: ResumableConnection) -> None:
        for i in range(3):
            await session.enqueue(b"for the client %d" % i)
        server_saw.append(PeerDead(await session.wait_closed()))

    async with peerwatch.serve(
        sends_and_waits, "127.0.0.1", 0, resume_window=5.0, close_timeout=0.3, **FAST
    ) as server:
        conn = await peerwatch.connect(
            "127.0.0.1", server.port, resume=True, close_timeout=0.3, **FAST
        )
        assert await conn.recv() == b"for the client 0"
        await eventually(lambda: conn.session.inbox == 2)  # arrived, never taken
        verdict = await conn.close("done")
        assert verdict.cause is Cause.LOCAL and verdict.undelivered == ()
        assert "2 received but not taken" in verdict.detail
        await eventually(lambda: bool(server_saw))
    theirs = server_saw[0].verdict
    assert theirs.cause is Cause.SESSION_LOST and theirs.detail.startswith("PEER_LOST: ")
    assert theirs.undelivered == (b"for the client 1", b"for the client 2")
