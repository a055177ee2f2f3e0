"""``ResumableConnection``: the application's side of a session, whatever connection carries it.

It owns the session (``core.session.Session``: numbers, replay buffer, inbox)
and the waiters; the TCP connection under it (a ``SessionLink``) comes and goes.
``send``, ``enqueue``, ``recv`` and ``async for`` work the same attached or not:
a message enqueued while detached waits in the replay buffer (bounded: senders
wait for room) and goes out after the next resume; ``recv`` returns what the
session's inbox holds and waits for more. The client (``resumable_client``)
reconnects when its link dies, the server (``resumable_server``) waits for the
client to come back; both end the same way: one final verdict, SESSION_LOST
handing back exactly what the peer application did not take, or the agreed end
(``close()`` on either side, GOODBYE NORMAL inside the session).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable

from peerwatch.aio.connection import EAGER_FLUSH
from peerwatch.aio.handles import Delivery
from peerwatch.aio.outages import Farewell, Lost, Outage, Resumed, SessionEvent, Subscriber
from peerwatch.aio.session_link import SessionLink
from peerwatch.aio.waiters import Waiters, error_for
from peerwatch.core.config import Config
from peerwatch.core.frames import NO_SESSION_ID, GoodbyeCode
from peerwatch.core.session import Session, SessionLost
from peerwatch.core.session_protocol import SessionRequest
from peerwatch.core.verdicts import QUIET_END, Cause, Verdict
from peerwatch.errors import ConnectionClosed, LocalProtocolError, PeerDead, PeerwatchError
from peerwatch.sessions.store import Fenced, SessionStore

log = logging.getLogger("peerwatch")


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time``, or the ``time.monotonic`` it returns on asyncio's own loops: a builtin
    called directly, where the method around it was 1/20 of a resumable connection's
    instructions per message (issue 12). Other loops (uvloop) keep their own clock."""
    if type(loop).time is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


class ResumableConnection:
    """A session's messages, exactly once and in order, across any number of connections."""

    def __init__(
        self,
        config: Config,
        session: Session,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        store: SessionStore | None = None,
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._clock = loop_clock(self._loop)  # stamps each enqueued message (replay age)
        self.config = config
        self.session = session
        self.link: SessionLink | None = None  # the attached connection, if any
        self.history: list[Outage] = []
        self.lost: SessionLost | None = None
        self.verdict: Verdict | None = None  # the session's final verdict
        self._store = store if store is not None and store.write_through else None
        self._write_lock = asyncio.Lock()  # write-through calls for one session in seq order
        self._waiters = Waiters(self._loop)
        self._subscribers: list[Subscriber] = []
        self._carried = 0  # inbox messages received on an earlier link (no window to free)
        self._peer_max_message: int | None = None
        self._peer_closing = False  # the peer said GOODBYE(NORMAL): its verdict ends us
        # another worker took the session over, or this one let it go (shutting down with a
        # shared store): its books are not ours to end
        self.fenced = False
        # close() during an outage: the goodbye still owed to the peer, (code, reason), while
        # a client dials to say it; then how it went (``wait_farewell``)
        self._goodbye: tuple[GoodbyeCode, str] | None = None
        self._acked_at_close = 0
        self._farewell: asyncio.Future[Farewell] | None = None
        self.farewell: Farewell | None = None

    # ------------------------------------------------------------------ queries

    @property
    def session_id(self) -> bytes | None:
        """The session's 16-byte id; None before the first HELLO exchange."""
        session_id = self.session.session_id
        return None if session_id == NO_SESSION_ID else session_id

    @property
    def acked_through(self) -> int:
        return self.session.acked_through

    @property
    def in_flight(self) -> int:
        """Messages enqueued and not yet acknowledged by the peer application."""
        return self.session.in_flight

    @property
    def connected(self) -> bool:
        return self.link is not None

    @property
    def ready(self) -> asyncio.Future[None]:
        """Done once the first connection carries the session."""
        return self._waiters.ready

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(event)`` for every ``Lost`` and ``Resumed``, on the event loop."""
        self._subscribers.append(callback)

    # ------------------------------------------------------ the application's side

    async def enqueue(self, payload: bytes | bytearray | memoryview) -> Delivery:
        """Queue a message for the session; waits only while the replay buffer is full
        (``max_replay_bytes``) or ``send_queue`` messages are unacknowledged."""
        if self.verdict is not None:
            self._raise_if_over()
        data = payload if type(payload) is bytes else bytes(payload)
        size = len(data)
        limit = self._peer_max_message
        if limit is not None and size > limit:
            raise LocalProtocolError(
                f"message of {size} bytes exceeds the peer's max_message ({limit})"
            )
        session = self.session
        window = self.config.send_queue
        if self._store is None:
            # the window, the room and the numbering in one call (the hot path's)
            seq = session.offer(data, self._clock(), window)
            while not seq:
                await self._waiters.space()
                self._raise_if_over()
                seq = session.offer(data, self._clock(), window)
        else:
            while not (session.in_flight < window and session.room(size)):
                await self._waiters.space()
                self._raise_if_over()
            async with self._write_lock:
                # kept first, numbered after: a flush pass may write it as soon as it is
                # in the session, and a message must never be written before it is kept
                await self._store_call(self._store.sent(session, session.next_seq, data))
                seq = session.send(data, self._clock())
        link = self.link
        if link is not None:  # attached: ``sent_through`` is this link's
            if seq - session.sent_through >= EAGER_FLUSH:
                # a caller enqueueing in a loop may not yield before its window is full:
                # the peer reads and ACKs while it goes on (as Connection.enqueue)
                link.flush_now()
            elif not link._flush_scheduled:
                link.poke()
        return Delivery(self, seq)

    async def send(self, payload: bytes | bytearray | memoryview) -> None:
        """Send a message and return once the peer application took it (across reconnects)."""
        delivery = await self.enqueue(payload)
        await self.wait_acked(delivery.seq)

    async def drain(self) -> None:
        """Wait until every message enqueued so far is acknowledged."""
        await self.wait_acked(self.session.next_seq - 1)

    async def wait_acked(self, seq: int) -> None:
        if self.session.acked_through >= seq:
            return
        self._raise_if_over()
        await self._waiters.acked(seq)

    async def recv(self) -> bytes:
        """The next message of the session; waits across reconnects."""
        session = self.session
        while True:
            # let go (``fenced``): what waits here untaken is replayed to the next owner
            if session.inbox and not self.fenced:
                if self._store is not None:
                    message = await self._take_kept()
                    if message is None:
                        continue
                else:
                    message = session.take()
                    assert message is not None
                self._taken(len(message))
                return message
            self._raise_if_over()
            await self._waiters.message()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        take = self.session.take
        # a write-through store must keep each take first (``recv``); it is set at __init__
        take_here = self._store is None
        while True:
            if take_here and not self.fenced:
                # no coroutine per message while messages wait (as ``Connection``)
                message = take()
                if message is not None:
                    link = self.link
                    if link is not None and not self._carried:
                        link.taken(len(message))  # ``_taken``'s common case, one call less
                    else:
                        self._taken(len(message))
                    yield message
                    continue
            try:
                yield await self.recv()
            except (PeerDead, ConnectionClosed) as exc:
                if exc.verdict.cause in QUIET_END:
                    return
                raise

    async def close(self, reason: str = "") -> Verdict:
        """End the session on both sides: wait (``close_timeout``) for what was enqueued to
        be acknowledged, then GOODBYE(NORMAL). What is still unacknowledged then is handed
        back in the verdict (cause LOCAL) and the peer is told GOODBYE(SESSION_LOST).

        During an outage (no connection carries the session) the verdict is the same and
        returned as soon: the caller does not wait for the network. A client then goes on
        dialing in the background, within what is left of ``resume_timeout``, only to say
        that GOODBYE (no message is written again), so the server's handler ends when the
        network is back rather than a ``resume_window`` later; ``wait_farewell()`` tells
        how it went. A server cannot dial its client: its client learns the end at its
        next resume (SESSION_UNKNOWN)."""
        if self.verdict is not None:
            return self.verdict
        with contextlib.suppress(asyncio.TimeoutError, PeerwatchError):
            await asyncio.wait_for(self.drain(), self.config.close_timeout)
        if self.verdict is not None:
            return self.verdict
        session = self.session
        unacknowledged = session.unacknowledged()
        untaken = session.inbox
        link = self.link
        if unacknowledged or untaken:
            # an agreed end would lose these silently: both sides hand them back instead
            detail = (
                f"closed by this side with {len(unacknowledged)} message(s) unacknowledged"
                f" and {untaken} received but not taken"
            )
        else:
            detail = f"session closed by this side: {reason or 'no reason given'}"
        code = GoodbyeCode.SESSION_LOST if unacknowledged or untaken else GoodbyeCode.NORMAL
        # before the verdict: ``_finished`` must see that a farewell is owed (a client keeps
        # its reconnect loop, and an attempt in flight, to say it)
        farewell = link is None and self._owe_goodbye(
            code, detail if code is GoodbyeCode.SESSION_LOST else reason
        )
        if farewell:
            detail += "; the server is told once it can be reached again (wait_farewell)"
        # the verdict first: the link's own end below is then no outage to recover from
        self._finish(
            Verdict(
                cause=Cause.LOCAL,
                detail=detail,
                detected_at=self._loop.time(),
                silent_for=0.0,
                undelivered=unacknowledged,
                detected_wall=time.time(),
            )
        )
        if link is not None:
            if unacknowledged or untaken:
                link.leave(GoodbyeCode.SESSION_LOST, detail, detail)
            else:
                await link.close(reason)  # its last ACK, then GOODBYE(NORMAL)
        if not farewell:
            session.close()  # a farewell's RESUME still needs the books: closed when it ends
        assert self.verdict is not None
        return self.verdict

    async def wait_farewell(self) -> Farewell | None:
        """Wait for the goodbye of a ``close()`` made during an outage to be said or given
        up (a client gives up ``resume_timeout`` after the loss, or when the server no
        longer knows the session). None when no such goodbye was owed: ``close()`` said
        it on a live connection, was not called, or the session ended another way."""
        farewell = self._farewell
        if farewell is None:
            return None
        return await asyncio.shield(farewell)

    async def wait_closed(self) -> Verdict:
        """Wait for the session's final verdict."""
        return await asyncio.shield(self._waiters.closed)

    def __repr__(self) -> str:
        state = self.verdict.cause.value if self.verdict else self.session.state.value
        sid = self.session_id.hex()[:8] if self.session_id else "-"
        return f"<peerwatch.ResumableConnection session={sid} {state}>"

    # ------------------------------------------------------------- from the links

    def link_request(self, link: SessionLink, request: SessionRequest) -> None:
        raise LocalProtocolError("only a server looks sessions up")  # pragma: no cover

    def link_attached(self, link: SessionLink, replayed: int) -> None:
        now = self._loop.time()
        self.link = link
        self._carried = self.session.inbox
        hello = link.peer_hello
        if hello is not None:
            self._peer_max_message = hello.max_message
        if not self._waiters.ready.done():
            self._waiters.ready.set_result(None)
        if self.history and self.history[-1].resumed_at is None:
            outage = self.history[-1]
            outage.resumed_at = now
            outage.replayed = replayed
            self._tell(Resumed(now - outage.lost_at, replayed, now))
        # the peer's RESUME acknowledged what its application took, ACKs lost in the cut
        # included: the senders waiting for those return now
        self.link_acked(link, self.session.acked_through)
        link.poke()  # the replay, and an ACK of what was taken meanwhile

    def link_received(self, link: SessionLink, count: int) -> None:
        self._waiters.message_arrived()

    def link_acked(self, link: SessionLink, through: int) -> None:
        self._waiters.acked_through(through, self.config.send_queue - self.in_flight)
        if self._store is not None:
            self._loop.create_task(self._store_acked())

    def link_ended(self, link: SessionLink, lost: SessionLost | None) -> None:
        if lost is not None:
            self._end_lost(lost)
        else:
            self._peer_closing = True  # the link's GOODBYE verdict follows and ends us

    def link_lost(self, link: SessionLink, verdict: Verdict) -> None:
        if self.verdict is not None:
            if self._goodbye is not None:  # an attempt to say goodbye failed: detach again
                self._attempt_failed(link, verdict)
            return
        if self._peer_closing:
            self._finish(verdict)
            return
        if link is not self.link:
            self._attempt_failed(link, verdict)
            return
        now = self._loop.time()
        self.link = None
        self.session.detach(now)
        self.history.append(Outage(verdict, now))
        log.info("session %s detached: %s", self, verdict.describe())
        self._tell(Lost(verdict, now))
        self._detached()

    # ------------------------------------------------------- for the subclasses

    def _detached(self) -> None:
        """The link died and the session waits for another (client: reconnect)."""

    def _attempt_failed(self, link: SessionLink, verdict: Verdict) -> None:
        """A link that never carried the session ended (a failed resume attempt)."""

    def _finished(self) -> None:
        """The session's final verdict is in (release what the subclass holds)."""

    def _owe_goodbye(self, code: GoodbyeCode, reason: str) -> bool:
        """``close()`` found the session detached: True if this side will still tell the
        peer (a client dials for it). The base says no: a server cannot reach its client."""
        return False

    def _start_farewell(self, code: GoodbyeCode, reason: str) -> None:
        """Owe the peer GOODBYE(``code``, ``reason``) until ``_end_farewell``."""
        self._goodbye = (code, reason)
        self._acked_at_close = self.session.acked_through
        self._farewell = self._loop.create_future()

    def _end_farewell(self, said: bool, detail: str, taken_anyway: int = 0) -> None:
        """The owed goodbye was said, or will never be: the books close, the waiters learn."""
        self._goodbye = None
        self.session.close()  # no-op when the session was lost meanwhile (UNKNOWN, a bound)
        outcome = Farewell(said, detail, self._loop.time(), taken_anyway)
        self.farewell = outcome
        log.info("session %s farewell: %s", self, detail)
        if taken_anyway:
            log.warning(
                "session %s: the server took %d message(s) handed back by close():"
                " their acknowledgements were lost in the outage",
                self,
                taken_anyway,
            )
        if self._farewell is not None and not self._farewell.done():
            self._farewell.set_result(outcome)

    def _end_lost(self, lost: SessionLost) -> None:
        """The session is over without agreement: hand back its unacknowledged messages."""
        if self.verdict is not None:
            return
        self.lost = lost
        link = self.link
        self._finish(
            Verdict(
                cause=Cause.SESSION_LOST,
                detail=lost.reason,
                detected_at=lost.at,
                silent_for=0.0 if link is not None else lost.at - self.session.detached_since,
                undelivered=lost.unacknowledged,
                detected_wall=time.time() - (self._loop.time() - lost.at),
            )
        )
        if link is not None and link.verdict is None:
            link.leave(GoodbyeCode.SESSION_LOST, lost.reason, f"session lost: {lost.reason}")

    def _finish(self, verdict: Verdict) -> None:
        if self.verdict is not None:
            return
        self.verdict = verdict
        self._waiters.fail(functools.partial(error_for, verdict, False), verdict)
        if not self._waiters.closed.done():
            self._waiters.closed.set_result(verdict)
        if verdict.cause is not Cause.LOCAL:
            log.info("session %s ended: %s", self, verdict.describe())
        self._finished()

    # ---------------------------------------------------------------- internals

    def _taken(self, size: int) -> None:
        """The application took a message of ``size`` bytes from the session's inbox."""
        link = self.link
        if link is not None and not self._carried:
            link.taken(size)  # the common case first: one call per message (issue 12)
            return
        carried = self._carried > 0
        if carried:
            self._carried -= 1  # it came on an earlier link: only its ACK is due
            if link is not None:
                link.poke()
        self._taken_unlinked(size, carried)

    def _taken_unlinked(self, size: int, carried: bool) -> None:
        """A message no live link counts was taken: ``carried`` over from an earlier link,
        or taken while detached (a server's budget counts those)."""

    def _raise_if_over(self) -> None:
        if (verdict := self.verdict) is not None:
            raise error_for(verdict, in_handshake=False)

    def _tell(self, event: SessionEvent) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("session subscriber %r failed", callback)

    async def _store_call(self, call: object) -> None:
        """Await a write-through call; a store that fails ends the session (or drops the link)."""
        try:
            await call  # type: ignore[misc]
        except Fenced as exc:
            self._fenced(str(exc))
            raise PeerDead(self.verdict) from exc  # type: ignore[arg-type]
        except Exception as exc:
            self._store_failed(exc)
            raise error_for(self.verdict, in_handshake=False) from exc  # type: ignore[arg-type]

    async def _take_kept(self) -> bytes | None:
        """Take the next message once the store kept the take: the take makes its ACK due,
        and an ACK must never cover a message the application may still not get."""
        assert self._store is not None
        session = self.session
        async with self._write_lock:
            if not session.inbox or self.fenced:
                return None  # another receiver took it meanwhile, or the session ended
            await self._store_call(self._store.consumed(session, session.consumed_through + 1))
            return session.take()

    async def _store_acked(self) -> None:
        if self._store is None or self.verdict is not None:
            return
        try:
            async with self._write_lock:
                await self._store_call(self._store.acked(self.session))
        except PeerwatchError:
            pass  # the verdict is set, every waiter was told

    def _fenced(self, why: str) -> None:
        """Another worker took the session over: this one lets go without ending it."""
        self.let_go(f"session taken over by another worker: {why}")

    def let_go(self, detail: str) -> None:
        """This process stops serving the session without ending it: the peer resumes it
        elsewhere from a shared store's books, which stay as they are (``fenced``).

        Its connection ends with GOODBYE(GOING_AWAY), which only detaches the peer's
        side; here the session ends LOCAL with nothing handed back (nothing is lost:
        the next owner replays what is unacknowledged)."""
        if self.verdict is not None:
            return
        self.fenced = True
        link = self.link
        self.link = None
        if link is not None and link.verdict is None:
            link.leave(GoodbyeCode.GOING_AWAY, "session moved", f"session moved: {detail}")
        self._finish(
            Verdict(
                cause=Cause.LOCAL,
                detail=detail,
                detected_at=self._loop.time(),
                silent_for=0.0,
                detected_wall=time.time(),
            )
        )

    def _store_failed(self, exc: BaseException) -> None:
        now = self._loop.time()
        self.session.on_store_failed(repr(exc), now)
        lost = self.session.lost
        assert lost is not None
        self._end_lost(lost)
