"""The futures a connection's callers wait on: the handshake, the end, a message, an ACK,
room in the send window, and the verdict callbacks.

Kept apart from the transport code so that ``aio/connection.py`` reads as the
path of bytes; the waiting rules (who is woken, in what order, what a cancelled
waiter gives back, what the verdict does to each) are here.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable
from typing import Any

from peerwatch.core.verdicts import Cause, Verdict
from peerwatch.errors import ConnectionClosed, HandshakeFailed, PeerDead, PeerwatchError

log = logging.getLogger("peerwatch")


#: The handshake's state while nobody asked for ``ready``: not decided yet / succeeded.
_PENDING: object = object()
_DONE: object = object()
#: ``callback(subject, verdict)``: the subject is what the waiters belong to (a connection).
VerdictCallback = Callable[[Any, Verdict], None]


class Waiters:
    """Everything that waits on one connection, and how the verdict ends each wait.

    Nothing is allocated for a wait nobody has asked for: ``ready`` and ``closed`` are
    futures made on first use (an idle server connection never uses them), the lists
    of waiters and callbacks are made with their first entry. What was decided before
    then is kept as plain state and handed to the future when it is made.
    """

    __slots__ = (
        "_acked", "_callbacks", "_closed", "_ends", "_final", "_gone", "_handshake", "_loop",
        "_ready", "_recv", "_space",
    )  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready: asyncio.Future[None] | None = None  # made by the first ``ready``
        # the handshake while ``_ready`` is not made: _PENDING, _DONE or the error it raised
        self._handshake: object = _PENDING
        self._closed: asyncio.Future[Verdict] | None = None  # made by the first ``closed``
        self._gone: Verdict | None = None  # the verdict, once the transport is gone
        self._final: Verdict | None = None  # a dead peer's verdict: ``end`` needs no socket close
        # one callback as it is (no list), more in a list
        self._callbacks: VerdictCallback | list[VerdictCallback] | None = None
        self._recv: asyncio.Future[None] | None = None
        self._acked: list[tuple[int, int, asyncio.Future[None]]] | None = None
        # a list, not a deque: rarely used, and an empty deque costs 760 bytes
        self._space: list[asyncio.Future[None]] | None = None
        self._ends: list[asyncio.Future[Verdict]] | None = None  # waiters on ``closed``

    # ------------------------------------------------------------- the handshake

    @property
    def ready(self) -> asyncio.Future[None]:
        """The HELLO handshake's outcome, as a future (made now if nobody asked before)."""
        fut = self._ready
        if fut is None:
            fut = self._ready = self._loop.create_future()
            state = self._handshake
            if state is _DONE:
                fut.set_result(None)
            elif isinstance(state, BaseException):
                fut.set_exception(state)
                fut.exception()  # retrieved: nobody may be waiting for the handshake
        return fut

    @property
    def in_handshake(self) -> bool:
        """Neither the HELLO exchange nor a verdict has ended the handshake yet."""
        fut = self._ready
        return not fut.done() if fut is not None else self._handshake is _PENDING

    def handshake_done(self) -> None:
        """The HELLO exchange completed: ``ready`` succeeds (at once or when made)."""
        fut = self._ready
        if fut is None:
            if self._handshake is _PENDING:
                self._handshake = _DONE
        elif not fut.done():
            fut.set_result(None)

    def _handshake_failed(self, error: BaseException) -> None:
        fut = self._ready
        if fut is None:
            if self._handshake is _PENDING:
                self._handshake = error
        elif not fut.done():
            fut.set_exception(error)
            fut.exception()  # retrieved: nobody may be waiting for the handshake

    # ------------------------------------------------------------------ the end

    @property
    def closed(self) -> asyncio.Future[Verdict]:
        """Done with the verdict once the transport is gone (made now if nobody asked)."""
        fut = self._closed
        if fut is None:
            fut = self._closed = self._loop.create_future()
            if self._gone is not None:
                fut.set_result(self._gone)
        return fut

    @property
    def is_gone(self) -> bool:
        """The transport is closed (``closed`` is, or would be, done)."""
        return self._gone is not None or (self._closed is not None and self._closed.done())

    def end(self) -> asyncio.Future[Verdict]:
        """The verdict once the transport is gone, in a future of the caller's own.

        Cancelling the caller cancels only its future, never ``closed`` or another
        waiter: what ``asyncio.shield`` gives, without its outer future and two closures
        per call (about 1 KiB per connection whose handler awaits ``wait_closed``,
        measured with tracemalloc at 2,000 connections).
        """
        if self.is_gone:
            return self.closed  # a done future: a caller's cancellation cannot touch it
        waiter: asyncio.Future[Verdict] = self._loop.create_future()
        if self._final is not None:
            waiter.set_result(self._final)
            return waiter
        ends = self._ends
        if ends is None:
            self._ends = [waiter]
        else:
            if len(ends) >= 8:  # callers that gave up (wait_for timeouts) are forgotten
                ends[:] = [end for end in ends if not end.done()]
            ends.append(waiter)
        return waiter

    def peer_dead(self, verdict: Verdict) -> None:
        """The peer is dead (any verdict but LOCAL): ``end`` waiters need not wait for the
        socket to close, nothing more is read or written for it. In a burst of verdicts
        (1,000 at one instant) the close is a loop pass of its own, for all of them, before
        the first waiter could run (issue 13)."""
        self._final = verdict
        for waiter in self._ends or ():
            if not waiter.done():
                waiter.set_result(verdict)
        self._ends = None

    def transport_gone(self, verdict: Verdict) -> None:
        """The transport is closed: ``closed`` and every ``end`` waiter get the verdict."""
        if self.is_gone:
            return
        self._gone = verdict
        if self._closed is not None:
            self._closed.set_result(verdict)
        for waiter in self._ends or ():
            if not waiter.done():
                waiter.set_result(verdict)
        self._ends = None

    def add_callback(self, callback: VerdictCallback) -> None:
        """Call ``callback(subject, verdict)`` from ``fail``. The subject comes with the call,
        so a connection needs no partial per callback, and one callback needs no list (0.2
        KiB of a callback-style server connection, bench/mem_per_conn.py)."""
        current = self._callbacks
        if current is None:
            self._callbacks = callback
        elif isinstance(current, list):
            current.append(callback)
        else:
            self._callbacks = [current, callback]

    async def message(self) -> None:
        """Wait for ``message_arrived`` (or the verdict); one receiver at a time."""
        if self._recv is not None:
            raise RuntimeError("recv() is already being awaited on this connection")
        waiter = self._recv = self._loop.create_future()
        try:
            await waiter
        finally:
            self._recv = None

    def message_arrived(self) -> None:
        waiter = self._recv
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def acked(self, seq: int) -> None:
        """Wait until ``acked_through(seq)`` or ``fail`` is called."""
        fut: asyncio.Future[None] = self._loop.create_future()
        if self._acked is None:
            self._acked = []
        heapq.heappush(self._acked, (seq, id(fut), fut))
        try:
            await fut
        finally:
            del fut  # as in ``space``: no cycle through the verdict's error

    async def space(self) -> None:
        """Wait until ``free(room)`` hands this waiter a slot (or ``fail``)."""
        waiter = self._loop.create_future()
        if self._space is None:
            self._space = []
        self._space.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            self._give_up_space(waiter)
            raise
        finally:
            # the verdict's error is raised from this frame and kept by the future: the cycle
            # would pin the verdict (and the messages it hands back) until a full gc
            del waiter

    def acked_through(self, acked: int, room: int) -> None:
        """Messages up to ``acked`` are acknowledged; ``room`` send slots are free."""
        waiters = self._acked
        while waiters and waiters[0][0] <= acked:
            fut = heapq.heappop(waiters)[2]
            if not fut.done():
                fut.set_result(None)
        self.free(room)

    def free(self, room: int) -> None:
        """Wake as many senders blocked on a full send queue as there are free slots."""
        space = self._space
        if not space:
            return
        woken = 0
        while woken < len(space) and room > 0:
            fut = space[woken]
            woken += 1
            if not fut.done():
                fut.set_result(None)
                room -= 1
        if woken:
            del space[:woken]

    def _give_up_space(self, waiter: asyncio.Future[None]) -> None:
        """A sender blocked on a full queue was cancelled: it must not keep a slot.

        Woken and then cancelled before it ran, it was handed a free slot that no
        other sender will hear of: pass the wake-up on to the next one (issue 8,
        item 4). Still waiting, it just leaves the line.
        """
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self.free(1)
        elif self._space and waiter in self._space:
            self._space.remove(waiter)

    def fail(
        self, make_error: Callable[[], BaseException], verdict: Verdict, subject: object = None
    ) -> None:
        """The verdict is in: waiters for the handshake, room or an ACK raise the error
        ``make_error()`` makes; a receiver wakes to take what is left or raise; callbacks
        are told, as ``callback(subject, verdict)``.

        The error is made only if a waiter needs it: most verdicts have none, and an
        exception with its message is ~4 us of every verdict in a burst of 1,000 (issue 13).
        """
        space, acked = self._space, self._acked
        if self.in_handshake or space or acked:
            error = make_error()
            self._handshake_failed(error)
        if space or acked:
            for waiter in (*(space or ()), *(w[2] for w in acked or ())):
                if not waiter.done():
                    waiter.set_exception(error)
            self._space = self._acked = None
        self.message_arrived()  # recv() re-checks and raises
        callbacks, self._callbacks = self._callbacks, None
        if callbacks is None:
            return
        for callback in callbacks if isinstance(callbacks, list) else (callbacks,):
            try:
                callback(subject, verdict)
            except Exception:
                log.exception("verdict callback %r failed", callback)


def error_for(verdict: Verdict, in_handshake: bool) -> PeerwatchError:
    """What a call raises once the verdict is in: the one mapping of verdict to exception."""
    if verdict.cause is Cause.LOCAL:
        return ConnectionClosed(verdict)
    return HandshakeFailed(verdict) if in_handshake else PeerDead(verdict)
