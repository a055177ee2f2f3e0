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

from peerwatch.core.verdicts import Cause, Verdict
from peerwatch.errors import ConnectionClosed, HandshakeFailed, PeerDead, PeerwatchError

log = logging.getLogger("peerwatch")


class Waiters:
    """Everything that waits on one connection, and how the verdict ends each wait."""

    __slots__ = ("_acked", "_ends", "_loop", "_recv", "_space", "callbacks", "closed", "ready")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.ready: asyncio.Future[None] = loop.create_future()  # the HELLO handshake
        self.closed: asyncio.Future[Verdict] = loop.create_future()  # the transport is gone
        self.callbacks: list[Callable[[Verdict], None]] = []
        self._recv: asyncio.Future[None] | None = None
        self._acked: list[tuple[int, int, asyncio.Future[None]]] = []
        # a list, not a deque: rarely used, and an empty deque costs 760 bytes
        self._space: list[asyncio.Future[None]] = []
        self._ends: list[asyncio.Future[Verdict]] | None = None  # waiters on ``closed``

    def end(self) -> asyncio.Future[Verdict]:
        """The verdict once the transport is gone, in a future of the caller's own.

        Cancelling the caller cancels only its future, never ``closed`` or another
        waiter: what ``asyncio.shield`` gives, without its outer future and two closures
        per call (about 1 KiB per connection whose handler awaits ``wait_closed``,
        measured with tracemalloc at 2,000 connections).
        """
        closed = self.closed
        if closed.done():
            return closed  # a done future: a caller's cancellation cannot touch it
        waiter: asyncio.Future[Verdict] = self._loop.create_future()
        ends = self._ends
        if ends is None:
            self._ends = [waiter]
        else:
            if len(ends) >= 8:  # callers that gave up (wait_for timeouts) are forgotten
                ends[:] = [end for end in ends if not end.done()]
            ends.append(waiter)
        return waiter

    def transport_gone(self, verdict: Verdict) -> None:
        """The transport is closed: ``closed`` and every ``end`` waiter get the verdict."""
        if self.closed.done():
            return
        self.closed.set_result(verdict)
        for waiter in self._ends or ():
            if not waiter.done():
                waiter.set_result(verdict)
        self._ends = None

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
        heapq.heappush(self._acked, (seq, id(fut), fut))
        try:
            await fut
        finally:
            del fut  # as in ``space``: no cycle through the verdict's error

    async def space(self) -> None:
        """Wait until ``free(room)`` hands this waiter a slot (or ``fail``)."""
        waiter = self._loop.create_future()
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
        elif waiter in self._space:
            self._space.remove(waiter)

    def fail(self, error: BaseException, verdict: Verdict) -> None:
        """The verdict is in: waiters for the handshake, room or an ACK raise ``error``;
        a receiver wakes to take what is left or raise; callbacks are told."""
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved: nobody may be waiting for the handshake
        for waiter in (*self._space, *(w[2] for w in self._acked)):
            if not waiter.done():
                waiter.set_exception(error)
        self._space.clear()
        self._acked.clear()
        self.message_arrived()  # recv() re-checks and raises
        for callback in self.callbacks:
            try:
                callback(verdict)
            except Exception:
                log.exception("verdict callback %r failed", callback)
        self.callbacks.clear()


def error_for(verdict: Verdict, in_handshake: bool) -> PeerwatchError:
    """What a call raises once the verdict is in: the one mapping of verdict to exception."""
    if verdict.cause is Cause.LOCAL:
        return ConnectionClosed(verdict)
    return HandshakeFailed(verdict) if in_handshake else PeerDead(verdict)
