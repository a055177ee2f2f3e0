"""Regression tests for the resumable-session defects of issue 12, on real loopback sockets."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable

import pytest
from resumekit import Cutter

import peerwatch
from peerwatch import Cause, Delivery, PeerDead, ResumableConnection
from peerwatch.core.session import LostCause, Session, SessionLimits
from peerwatch.sessions.memory import MemoryStore
from peerwatch.sessions.redis import RedisStore
from peerwatch.sessions.redis import connect as connect_redis
from peerwatch.sessions.store import StoreFailed
from peerwatch.testing.servers import Server

pytestmark = pytest.mark.timeout(60)

FAST = {"interval": 0.2, "timeout": 5.0}
BIG = 256 * 1024


async def test_a_message_numbered_while_writing_is_paused_and_the_outbox_empty_is_written() -> None:
    """Issue 12, defect 1: the stall with large messages.

    The session numbers a message at once, but the link pulls it into its outbox
    only in a pass with a data budget. When the transport paused writing right
    after the outbox emptied, that message was neither in the outbox nor counted
    as pending, so ``resume_writing`` scheduled no pass and it was never written.
    The test drives the client into exactly that state (the server's application
    reads nothing until told), then numbers one more message.
    """
    gate = asyncio.Event()
    got: list[int] = []

    async def handler(session: ResumableConnection) -> None:
        await gate.wait()
        async for message in session:
            got.append(len(message))

    async with peerwatch.serve(handler, "127.0.0.1", 0, resume_window=30, **FAST) as server:
        conn = await peerwatch.connect(
            "127.0.0.1", server.port, resume=True, max_replay_bytes=512 * 1024 * 1024, **FAST
        )
        try:
            link = conn.link
            assert link is not None
            protocol = link.session_protocol
            sent = 0
            for _ in range(400):  # a loopback socket pair holds a few MiB at most
                await conn.enqueue(b"x" * BIG)
                sent += 1
                for _ in range(5):  # the flush pass runs at the next loop turns
                    await asyncio.sleep(0)
                if protocol.writing_paused and not protocol._outbox:
                    break
            assert protocol.writing_paused and not protocol._outbox, "state never reached"
            last = await conn.enqueue(b"y" * BIG)  # numbered now, written after the pause
            sent += 1
            gate.set()
            await asyncio.wait_for(conn.wait_acked(last.seq), 10)
            assert len(got) == sent and got == [BIG] * sent
        finally:
            gate.set()
            await conn.close()


async def stream(conn: ResumableConnection, payload: bytes, count: int, window: int) -> None:
    """Enqueue ``count`` messages with at most ``window`` unacknowledged, then drain."""
    outstanding: collections.deque[Delivery] = collections.deque()
    for _ in range(count):
        outstanding.append(await conn.enqueue(payload))
        if len(outstanding) > window:
            await outstanding.popleft()
    await conn.drain()


async def test_one_mib_messages_with_a_window_of_unacknowledged_never_stall() -> None:
    """Issue 12, defect 1 as reported: 1 MiB messages, at most 1,024 unacknowledged.

    The old code stalled in 6 of 8 such runs of 400 messages (the last 1-3 numbered,
    never written); three runs of 150 here, each bounded by 15 s.
    """

    async def sink(session: ResumableConnection) -> None:
        async for _ in session:
            pass

    payload = b"x" * (1024 * 1024)
    for _ in range(3):
        async with peerwatch.serve(sink, "127.0.0.1", 0, resume_window=30) as server:
            conn = await peerwatch.connect("127.0.0.1", server.port, resume=True)
            try:
                await asyncio.wait_for(stream(conn, payload, 150, window=1024), 15)
                assert conn.acked_through == 150
            finally:
                await conn.close()


class TakesFailAfter(MemoryStore):
    """The real in-process store, written through, whose ``consumed`` fails from a take on."""

    write_through = True

    def __init__(self, fail_at: int) -> None:
        super().__init__(SessionLimits(window=5.0))
        self.fail_at = fail_at

    async def sent(self, session: Session, seq: int, payload: bytes) -> None:
        await asyncio.sleep(0)

    async def consumed(self, session: Session, through: int) -> None:
        await asyncio.sleep(0)
        if through >= self.fail_at:
            raise StoreFailed("the store went away")

    async def acked(self, session: Session) -> None:
        await asyncio.sleep(0)


async def test_a_store_failure_on_the_server_reaches_the_client_as_store_said_once() -> None:
    """Issue 12, defect 2: the client read PEER_LOST and the peer's words twice over."""

    async def taker(session: ResumableConnection) -> None:
        with contextlib.suppress(PeerDead):
            while True:
                await session.recv()

    store = TakesFailAfter(fail_at=2)
    async with peerwatch.serve(taker, "127.0.0.1", 0, session_store=store, **FAST) as server:
        conn = await peerwatch.connect("127.0.0.1", server.port, resume=True, **FAST)
        for i in range(3):
            await conn.enqueue(b"m%d" % i)
        with pytest.raises(PeerDead) as caught:
            await asyncio.wait_for(conn.drain(), 10)
    verdict = caught.value.verdict
    assert verdict.cause is Cause.SESSION_LOST
    assert conn.lost is not None and conn.lost.cause is LostCause.STORE
    assert verdict.detail == (
        "STORE: the peer lost the session: the session store failed:"
        " StoreFailed('the store went away')"
    )
    assert verdict.undelivered == (b"m1", b"m2")


def test_a_loss_relayed_by_the_peer_is_said_once_and_keeps_peer_lost() -> None:
    """A peer that lost the session because we did relays our words back: said once."""
    session = Session(b"s" * 16, b"t" * 32, SessionLimits(), 0.0)
    session.on_peer_lost("PEER_LOST: the peer lost the session: the peer lost the session: x", 1.0)
    assert session.lost is not None and session.lost.cause is LostCause.PEER_LOST
    assert session.lost.detail == "the peer lost the session: x"


async def test_an_idle_session_taken_over_by_another_worker_ends_its_old_handler_as_moved(
    redis: Server,
) -> None:
    """Issue 12, defect 4: the old worker's handler waited until that worker stopped.

    Two servers in this process, each with its own Redis store on one real Redis
    (two ``serve --workers``). The client's connection to A is cut on the client's
    side only: A's connection stays open and silent (its liveness timeout is long),
    so A has no write to be fenced on. The client resumes through B; A must notice
    on its periodic renewal (every third of the window) and end its copy as moved.
    """
    limits = SessionLimits(window=1.5)
    slow = {"interval": 0.5, "timeout": 30.0}
    ended: dict[str, list[peerwatch.Verdict | None]] = {"a": [], "b": []}

    def echo_as(name: str) -> Callable[[ResumableConnection], Awaitable[None]]:
        async def handler(session: ResumableConnection) -> None:
            try:
                async for message in session:
                    await session.enqueue(b"echo " + message)
            finally:
                ended[name].append(session.verdict)

        return handler

    clients = [connect_redis(f"redis://{redis.host}:{redis.port}/0", timeout=1.0) for _ in "ab"]
    stores = [RedisStore(client, limits) for client in clients]
    try:
        async with (
            peerwatch.serve(echo_as("a"), "127.0.0.1", 0, session_store=stores[0], **slow) as a,
            peerwatch.serve(echo_as("b"), "127.0.0.1", 0, session_store=stores[1], **slow) as b,
            Cutter(a.port) as cutter,
        ):
            conn = await peerwatch.connect(
                "127.0.0.1", cutter.port, resume=True, resume_timeout=10, **slow
            )
            try:
                await conn.send(b"one")
                assert await asyncio.wait_for(conn.recv(), 5) == b"echo one"
                cutter.target_port = b.port
                assert cutter.cut_client_side() == 1
                await asyncio.wait_for(conn.send(b"two"), 5)  # resumed on B
                assert await asyncio.wait_for(conn.recv(), 5) == b"echo two"
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5 * limits.window
                while not ended["a"] and loop.time() < deadline:
                    await asyncio.sleep(0.05)
                assert ended["a"], "A's handler still waits for a session B serves"
                verdict = ended["a"][0]
                assert verdict is not None and verdict.cause is Cause.LOCAL
                assert "taken over by another worker" in verdict.detail
                assert not ended["b"]  # B serves it on
                await asyncio.wait_for(conn.send(b"three"), 5)
                assert await asyncio.wait_for(conn.recv(), 5) == b"echo three"
            finally:
                await conn.close()
    finally:
        for store in stores:
            await store.aclose()
        for client in clients:
            await client.aclose()
