"""close() during an outage ends the session on both sides (issue 12).

The client is cut from the server by a middlebox on loopback (``resumekit.Cutter``:
RST on every connection, new ones refused or held), closes, and the network comes
back: the client's farewell must tell the server, whose handler then ends at once,
not a ``resume_window`` later. Each test fails on the code before the farewell.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from resumekit import Cutter
from waiting import eventually

import peerwatch
from peerwatch import Cause, ResumableConnection, Verdict

pytestmark = pytest.mark.timeout(60)

FAST = {"interval": 0.2, "timeout": 1.0, "close_timeout": 0.3}
#: Far longer than any test waits: a server session that ends did not wait for its window.
WINDOW = 30.0
#: How soon the server must hear the goodbye once the network is back: a few backoff
#: steps (0.05 s doubling) and a round trip, with a wide margin for a loaded machine.
TOLD_WITHIN = 5.0


@dataclass
class ServerSide:
    """What the server's handler saw: messages taken, and its session's final verdict."""

    received: list[bytes] = field(default_factory=list)
    to_client: list[bytes] = field(default_factory=list)  # enqueued once the client is cut
    cut: asyncio.Event = field(default_factory=asyncio.Event)
    verdict: Verdict | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, session: ResumableConnection) -> None:
        async def speak_when_cut() -> None:
            await self.cut.wait()
            for payload in self.to_client:
                await session.enqueue(payload)

        speaker = asyncio.ensure_future(speak_when_cut())
        try:
            async for message in session:  # ends quietly on an agreed end
                self.received.append(message)
        except peerwatch.PeerwatchError:
            pass
        finally:
            speaker.cancel()
            self.verdict = await session.wait_closed()
            self.ended.set()


@pytest.fixture
async def rig() -> AsyncIterator[tuple[ServerSide, Cutter]]:
    side = ServerSide()
    async with (
        peerwatch.serve(side.handle, "127.0.0.1", 0, resume_window=WINDOW, **FAST) as server,
        Cutter(server.port) as cutter,
    ):
        yield side, cutter


async def connect(cutter: Cutter, resume_timeout: float = 10.0) -> ResumableConnection:
    return await peerwatch.connect(
        "127.0.0.1", cutter.port, resume=True, resume_timeout=resume_timeout, **FAST
    )


async def cut_off(conn: ResumableConnection, cutter: Cutter, side: ServerSide) -> None:
    """RST the connection and refuse new ones (the server unreachable); wait for both
    sides to notice."""
    cutter.refusing = True
    cutter.cut()
    await eventually(lambda: not conn.connected)
    side.cut.set()


async def test_close_during_an_outage_ends_the_servers_session_once_the_network_is_back(
    rig: tuple[ServerSide, Cutter],
) -> None:
    side, cutter = rig
    conn = await connect(cutter)
    await conn.send(b"before")
    await cut_off(conn, cutter, side)
    loop = asyncio.get_running_loop()
    began = loop.time()
    verdict = await conn.close("bye")
    assert loop.time() - began < 1.0, "close() waited for the network"
    assert verdict.cause is Cause.LOCAL and verdict.undelivered == (), verdict.describe()
    await asyncio.sleep(0.5)
    assert not side.ended.is_set(), "the server cannot know yet: the network is out"
    cutter.refusing = False
    back = loop.time()
    await asyncio.wait_for(side.ended.wait(), TOLD_WITHIN)
    told = loop.time() - back
    farewell = await conn.wait_farewell()
    assert farewell is not None and farewell.said and farewell.taken_anyway == 0, farewell
    assert "GOODBYE(NORMAL)" in farewell.detail
    assert side.verdict is not None and side.verdict.cause is Cause.GOODBYE
    assert side.received == [b"before"]
    assert told < TOLD_WITHIN < WINDOW


@pytest.mark.parametrize("big", [0, 3_000_000], ids=["small", "3MB-server-tail"])
async def test_close_during_an_outage_hands_back_the_unacknowledged_and_replays_nothing(
    rig: tuple[ServerSide, Cutter], big: int
) -> None:
    """With a big server tail, the server replays megabytes right after its RESUME: the
    client's GOODBYE must still get through (its socket may close with them unread)."""
    side, cutter = rig
    side.to_client = [b"to the client while away", b"x" * big]
    conn = await connect(cutter)
    await conn.send(b"before")
    await cut_off(conn, cutter, side)
    away = [await conn.enqueue(b"while away %d" % i) for i in range(2)]
    verdict = await conn.close("bye")  # waits close_timeout for ACKs that cannot come
    assert verdict.cause is Cause.LOCAL
    assert verdict.undelivered == (b"while away 0", b"while away 1")
    assert not any(delivery.acknowledged for delivery in away)
    cutter.refusing = False
    await asyncio.wait_for(side.ended.wait(), TOLD_WITHIN)
    farewell = await conn.wait_farewell()
    assert farewell is not None and farewell.said and farewell.taken_anyway == 0, farewell
    assert "GOODBYE(SESSION_LOST)" in farewell.detail
    # the handed-back messages were not written again: the server never got them ...
    assert side.received == [b"before"]
    # ... and the server's own undelivered message went back to its handler
    theirs = side.verdict
    assert theirs is not None and theirs.cause is Cause.SESSION_LOST, theirs
    assert theirs.detail.startswith("PEER_LOST: ")
    assert theirs.undelivered == (b"to the client while away", b"x" * big)


async def test_the_farewell_tells_which_handed_back_messages_the_server_took_anyway(
    rig: tuple[ServerSide, Cutter],
) -> None:
    """The server's application took the message, its ACK was lost in the cut: close()
    hands it back (nothing said otherwise), and the farewell's RESUME tells it was taken."""
    side, cutter = rig
    conn = await connect(cutter)
    await conn.send(b"before")
    cutter.hold_replies()  # the server's ACKs (and PONGs) no longer reach the client
    await conn.enqueue(b"taken, ACK lost")
    await eventually(lambda: side.received == [b"before", b"taken, ACK lost"])
    await cut_off(conn, cutter, side)
    cutter.release()
    verdict = await conn.close("bye")
    assert verdict.undelivered == (b"taken, ACK lost",)
    cutter.refusing = False
    await asyncio.wait_for(side.ended.wait(), TOLD_WITHIN)
    farewell = await conn.wait_farewell()
    assert farewell is not None and farewell.said and farewell.taken_anyway == 1, farewell
    assert side.received == [b"before", b"taken, ACK lost"]  # once, never replayed


async def test_close_twice_during_an_outage_gives_one_verdict_and_one_farewell(
    rig: tuple[ServerSide, Cutter],
) -> None:
    side, cutter = rig
    conn = await connect(cutter)
    await conn.send(b"before")
    await cut_off(conn, cutter, side)
    first, second = await asyncio.gather(conn.close("one"), conn.close("two"))
    third = await conn.close("three")
    assert first is second is third
    cutter.refusing = False
    await asyncio.wait_for(side.ended.wait(), TOLD_WITHIN)
    farewell = await conn.wait_farewell()
    assert farewell is not None and farewell.said
    assert await conn.wait_farewell() is farewell
    accepted, attempts = cutter.accepted, conn.attempts
    await asyncio.sleep(0.5)
    assert (cutter.accepted, conn.attempts) == (accepted, attempts), "dialing went on"
    assert side.verdict is not None and side.verdict.cause is Cause.GOODBYE


async def test_close_while_a_reconnect_attempt_is_in_flight_says_goodbye_on_it(
    rig: tuple[ServerSide, Cutter],
) -> None:
    side, cutter = rig
    conn = await connect(cutter)
    await conn.send(b"before")
    await cut_off(conn, cutter, side)
    cutter.hold()  # the next connection is made, its HELLO and RESUME wait in the middlebox
    accepted = cutter.accepted
    cutter.refusing = False
    await eventually(lambda: cutter.accepted > accepted)
    attempts = conn.attempts
    verdict = await conn.close("bye")
    assert verdict.cause is Cause.LOCAL and verdict.undelivered == ()
    assert not side.ended.is_set()
    cutter.release()
    await asyncio.wait_for(side.ended.wait(), TOLD_WITHIN)
    farewell = await conn.wait_farewell()
    assert farewell is not None and farewell.said, farewell
    assert conn.attempts == attempts, "the attempt in flight said it: no other was needed"
    assert side.verdict is not None and side.verdict.cause is Cause.GOODBYE


async def test_close_when_the_server_is_gone_for_good_gives_up_at_resume_timeout(
    rig: tuple[ServerSide, Cutter],
) -> None:
    side, cutter = rig
    conn = await connect(cutter, resume_timeout=1.0)
    await conn.send(b"before")
    await cut_off(conn, cutter, side)  # refusing from now on, for good
    loop = asyncio.get_running_loop()
    lost_at = conn.history[-1].lost_at
    began = loop.time()
    verdict = await conn.close("bye")
    assert loop.time() - began < 0.5, "close() waited for the farewell"
    assert verdict.cause is Cause.LOCAL
    farewell = await asyncio.wait_for(conn.wait_farewell(), 5.0)
    assert farewell is not None and not farewell.said and farewell.taken_anyway == 0
    assert "resume_timeout" in farewell.detail, farewell.detail
    assert 0.9 <= farewell.at - lost_at <= 3.0, farewell.at - lost_at  # the outage's budget
    await asyncio.sleep(0)
    left = [
        task
        for task in asyncio.all_tasks()
        if "_reconnect" in task.get_coro().__qualname__  # type: ignore[union-attr]
    ]
    assert left == [], "the farewell left a task behind"
    assert not side.ended.is_set()  # the server waits out its window: it was never told


def test_a_loop_stopped_right_after_close_cancels_the_farewell_and_says_so() -> None:
    """asyncio.run ends by cancelling what still runs: the farewell ends as not said, with
    why, instead of leaving a pending task (or a waiter) behind."""

    async def close_and_leave() -> ResumableConnection:
        side = ServerSide()
        async with (
            peerwatch.serve(side.handle, "127.0.0.1", 0, resume_window=WINDOW, **FAST) as server,
            Cutter(server.port) as cutter,
        ):
            conn = await connect(cutter)
            await conn.send(b"before")
            await cut_off(conn, cutter, side)
            await conn.close("bye")
            assert conn.farewell is None  # still owed when the loop stops
            return conn

    conn = asyncio.run(close_and_leave())
    farewell = conn.farewell
    assert farewell is not None and not farewell.said
    assert farewell.detail == "goodbye not said: the reconnect loop was cancelled"


async def test_a_farewell_to_a_server_that_forgot_the_session_ends_at_its_refusal() -> None:
    """The server restarted without a shared store while the client was away: the farewell
    is refused (SESSION_UNKNOWN) and ends there, not at resume_timeout."""
    side = ServerSide()
    first = await peerwatch.serve(side.handle, "127.0.0.1", 0, resume_window=WINDOW, **FAST)
    async with Cutter(first.port) as cutter:
        conn = await connect(cutter, resume_timeout=WINDOW)
        await conn.send(b"before")
        await cut_off(conn, cutter, side)
        await first.shutdown()  # its sessions die with it
        second = await peerwatch.serve(
            ServerSide().handle, "127.0.0.1", 0, resume_window=WINDOW, **FAST
        )
        try:
            cutter.target_port = second.port  # the restarted server, at the same address
            verdict = await conn.close("bye")
            assert verdict.cause is Cause.LOCAL and verdict.undelivered == ()
            cutter.refusing = False
            farewell = await asyncio.wait_for(conn.wait_farewell(), TOLD_WITHIN)
        finally:
            await second.shutdown()
    assert farewell is not None and not farewell.said
    assert farewell.detail.startswith("goodbye not said: UNKNOWN: "), farewell.detail
    assert conn.verdict is verdict  # the refusal changes nothing of what close() returned
