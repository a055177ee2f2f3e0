"""The adapter against the store interface's write-through contract (sessions/store.py).

The store here is the real in-process ``MemoryStore`` with ``write_through`` on
and its three hooks recording (or failing) what the adapter tells it: the order
the adapter promises a shared store (Redis) is checked on real loopback sockets.
"""

from __future__ import annotations

import asyncio

import pytest

import peerwatch
from peerwatch import Cause, PeerDead, ResumableConnection
from peerwatch.core.session import Session, SessionLimits
from peerwatch.sessions.memory import MemoryStore
from peerwatch.sessions.store import StoreFailed

pytestmark = pytest.mark.timeout(60)

FAST = {"interval": 0.2, "timeout": 1.0}
LIMITS = SessionLimits(window=5.0)


class RecordingStore(MemoryStore):
    write_through = True

    def __init__(self, fail_consumed_at: int | None = None) -> None:
        super().__init__(LIMITS)
        self.calls: list[tuple[str, int]] = []
        self.fail_consumed_at = fail_consumed_at

    async def sent(self, session: Session, seq: int, payload: bytes) -> None:
        assert seq == session.next_seq  # not in the session yet: no DATA can carry it
        await asyncio.sleep(0)  # a real store answers later: the adapter must wait for it
        self.calls.append(("sent", seq))

    async def consumed(self, session: Session, through: int) -> None:
        await asyncio.sleep(0)
        if through == self.fail_consumed_at:
            raise StoreFailed("the store went away")
        self.calls.append(("consumed", through))

    async def acked(self, session: Session) -> None:
        self.calls.append(("acked", session.acked_through))


async def test_a_write_through_store_is_told_in_the_order_that_keeps_exactly_once() -> None:
    store = RecordingStore()
    taken: list[bytes] = []

    async def echo(session: ResumableConnection) -> None:
        async for message in session:
            taken.append(message)
            await session.enqueue(message)

    async with (
        peerwatch.serve(echo, "127.0.0.1", 0, session_store=store, **FAST) as server,
        peerwatch.connect("127.0.0.1", server.port, resume=True, **FAST) as conn,
    ):
        sent = [b"%d" % i for i in range(50)]
        for message in sent:
            await conn.enqueue(message)
        assert [await conn.recv() for _ in sent] == sent
        await conn.drain()
        for _ in range(100):
            if ("acked", 50) in store.calls:
                break
            await asyncio.sleep(0.01)
    assert taken == sent
    # every message kept before the application saw it, every echo before it was written
    assert [n for kind, n in store.calls if kind == "consumed"] == list(range(1, 51))
    assert [n for kind, n in store.calls if kind == "sent"] == list(range(1, 51))
    for seq in range(1, 51):
        assert store.calls.index(("consumed", seq)) < store.calls.index(("sent", seq))
    acked = [n for kind, n in store.calls if kind == "acked"]
    assert acked == sorted(acked) and acked[-1] == 50


async def test_a_store_that_fails_ends_the_session_and_the_client_gets_its_tail_back() -> None:
    store = RecordingStore(fail_consumed_at=3)
    server_saw: list[PeerDead] = []

    async def taker(session: ResumableConnection) -> None:
        try:
            while True:
                await session.recv()
        except PeerDead as dead:
            server_saw.append(dead)

    async with peerwatch.serve(taker, "127.0.0.1", 0, session_store=store, **FAST) as server:
        conn = await peerwatch.connect("127.0.0.1", server.port, resume=True, **FAST)
        sent = [b"m%d" % i for i in range(5)]
        for message in sent:
            await conn.enqueue(message)
        with pytest.raises(PeerDead) as caught:
            await conn.drain()
    assert server_saw and server_saw[0].verdict.detail.startswith("STORE: ")
    verdict = caught.value.verdict
    assert verdict.cause is Cause.SESSION_LOST and verdict.detail.startswith("STORE: ")
    # m0, m1 were taken (and kept); m2's take could not be kept: it comes back with the rest
    assert verdict.undelivered == tuple(sent[2:])
    assert conn.acked_through == 2
