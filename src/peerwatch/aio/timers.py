"""One timer structure per event loop, not one asyncio timer per connection.

A heap of ``(when, order, target)`` entries with lazy invalidation: a target's
deadline usually moves *later* (every byte received pushes the death deadline
out), and pushing a heap entry on every receive would cost more than it saves.
So a target is only re-pushed when it asks for an *earlier* time than the entry
it already has. The queue owns exactly one ``loop.call_at``.

A target whose deadline lives in a plain attribute (``_timer_clock.due``, the
sans-IO liveness machine's) is touched only when that deadline really passes:
an entry whose target's ``due`` moved later is re-pushed at ``due`` by the queue
itself, without calling ``on_timer``, and (up to ``SETTLE_AHEAD`` early) before the
loop timer is armed, so the loop rarely wakes for it. At 10,000 idle connections every ``on_timer``
call used to be such a stale one (each PING received moves the deadline): a
quarter of the server's CPU, and hundreds of wake-ups a second. An entry that
surfaces later than its time by more than the clock's ``stall_threshold`` still
calls ``on_timer``: our process stalled, and the machine must hear of it (liveness
rule 4) even when the peer's bytes, read first, moved its deadline meanwhile.

Entries at the same time share one bucket (``when -> target``, or a list of them): the heap
holds each time once. A ``batch_pings`` server's connections all fall due on the points of
one shared grid, so a pass at a grid point pops one time and walks a list, where it popped
and pushed one heap entry per connection (issue 13: about 90 bytes of each idle connection,
the entry's tuple and its tie-breaking counter, and the heap's sifting per heartbeat).

Work a target wants done *after* a pass (``after_pass``: a verdict's GOODBYE and close)
runs in one callback scheduled at the pass's end, behind every wake-up the pass caused:
in a burst of 1,000 verdicts the last handler then wakes after 1,000 decisions, not
after 1,000 decisions and 1,000 closes (issue 13, bench/verdict_burst.py).
"""

from __future__ import annotations

import asyncio
import heapq
import weakref
from collections.abc import Callable
from typing import Protocol

#: Entries due within this many seconds of the earliest are run in the same pass.
COALESCE = 0.001
#: ``after_pass`` work waits while further deadlines are due (the rest of a burst is
#: decided first: a close, and the socket's close it causes a loop pass later, cost about
#: 40 us each), but no longer than this after the pass that asked for it.
AFTER_PASS_WAIT = 0.1
#: Stale entries are re-pushed ahead of their time only this far ahead: the loop then
#: wakes about once a second for them, each pass touching a second's worth of entries
#: (settling them all at once held the loop for tens of ms every few seconds at 10,000).
SETTLE_AHEAD = 1.0


class TimerClock(Protocol):
    """A target's deadline kept as plain attributes (``core.liveness.Liveness`` is one)."""

    due: float  # no work before this; it may move later without telling the queue
    armed: float  # written by the queue: the time the target's entry is set for
    stall_threshold: float  # an entry this late means our process stalled


class TimerTarget(Protocol):
    _timer_at: float | None  # the time of the target's live entry (the queue's)

    @property
    def _timer_clock(self) -> TimerClock | None:
        """The target's deadline; None: every entry that falls due calls ``on_timer``."""

    def on_timer(self, now: float) -> float | None:
        """Run due work; return the next absolute deadline, or None for no more timers."""


#: A bucket: the one target due at a time, or a list of them (most times have one).
Bucket = TimerTarget | list[TimerTarget]


def _members(bucket: Bucket) -> list[TimerTarget] | tuple[TimerTarget]:
    return bucket if isinstance(bucket, list) else (bucket,)


class TimerQueue:
    __slots__ = (
        "_after", "_after_since", "_armed_at", "_buckets", "_handle", "_heap", "_in_pass",
        "_loop",
    )  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[float] = []  # the buckets' times, each once
        self._buckets: dict[float, Bucket] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        self._after: list[Callable[[], None]] = []  # work for after the pass
        self._after_since = 0.0  # when the oldest of it was asked for
        self._in_pass = False

    def __len__(self) -> int:
        """Entries, live or stale (a target moved later leaves its old one behind)."""
        return sum(len(b) if isinstance(b, list) else 1 for b in self._buckets.values())

    def schedule(self, target: TimerTarget, when: float) -> None:
        """Ensure ``target.on_timer`` runs at ``when`` or earlier."""
        current = target._timer_at
        if current is not None and current <= when:
            return  # an entry at or before `when` exists; it will re-arm as needed
        self._push(target, when)
        if when < self._armed_at:
            self._arm(when)

    def cancel(self, target: TimerTarget) -> None:
        """Forget ``target``; its entries are dropped when their bucket surfaces."""
        target._timer_at = None

    @property
    def in_pass(self) -> bool:
        """A pass of timers is running (a target's ``on_timer`` is on the stack)."""
        return self._in_pass

    def after_pass(self, work: Callable[[], None]) -> None:
        """Run ``work`` after the current pass of timers, behind what the pass woke (from
        outside a pass: in the next loop pass), and after the passes of deadlines already
        due by then (``AFTER_PASS_WAIT`` at most). All of it runs in order, in one loop
        callback."""
        after = self._after
        if not after:
            self._after_since = self._loop.time()
        after.append(work)
        if not self._in_pass and len(after) == 1:
            self._loop.call_soon(self._run_after)

    def _run_after(self) -> None:
        heap, now = self._heap, self._loop.time()
        if heap and heap[0] <= now and now - self._after_since < AFTER_PASS_WAIT:
            return  # the next pass is due: it runs first, and calls this again at its end
        work, self._after = self._after, []
        for job in work:
            job()

    def _push(self, target: TimerTarget, when: float) -> None:
        target._timer_at = when
        clock = target._timer_clock
        if clock is not None:
            clock.armed = when
        buckets = self._buckets
        bucket = buckets.get(when)
        if bucket is None:
            buckets[when] = target
            heapq.heappush(self._heap, when)
        elif isinstance(bucket, list):
            bucket.append(target)
        else:
            buckets[when] = [bucket, target]

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        self._handle = self._loop.call_at(when, self._run)

    def _run(self) -> None:
        self._handle = None
        self._armed_at = float("inf")
        now = self._loop.time()
        horizon = now + COALESCE
        again: list[tuple[TimerTarget, float]] = []
        self._in_pass = True
        try:
            self._expire(now, horizon, again)
        finally:
            self._in_pass = False
            if self._after:
                self._loop.call_soon(self._run_after)
        for target, following in again:
            self.schedule(target, following)
        self._settle(now + SETTLE_AHEAD)

    def _expire(self, now: float, horizon: float, again: list[tuple[TimerTarget, float]]) -> None:
        """Call every target due by ``horizon`` and queue its next deadline; those within
        ``horizon`` are collected in ``again``, for ``_run`` to schedule after the pass."""
        heap, buckets = self._heap, self._buckets
        pop = heapq.heappop
        clock_now = self._loop.time
        while heap and heap[0] <= horizon:
            when = pop(heap)
            for target in _members(buckets.pop(when)):
                if target._timer_at != when:
                    continue  # stale or cancelled entry
                clock = target._timer_clock
                if (
                    clock is not None
                    and clock.due > horizon
                    and now - when <= clock.stall_threshold
                ):
                    self._push(target, clock.due)  # moved later: nothing to do yet
                    continue
                target._timer_at = None
                # a coalesced entry fires up to COALESCE early: it sees its own deadline as
                # now. The clock is read again for each: a verdict's time is when it was
                # reached, and the last of a burst of 1,000 is reached tens of ms after the
                # first
                called_at = clock_now()
                following = target.on_timer(called_at if called_at > when else when)
                if following is None:
                    continue
                if following <= horizon:  # the next pass at the earliest: never spin in this one
                    again.append((target, following))
                elif (current := target._timer_at) is None or current > following:
                    # ``schedule`` less its arming, which ``_settle`` does at the pass's end
                    # (the commonest case: 3 % of an idle heartbeat's instructions)
                    self._push(target, following)

    def _settle(self, ahead: float) -> None:
        """Drop the buckets at the top that hold nothing really due: their stale entries go,
        the entries whose deadline moved later (due before ``ahead``) are re-pushed at it.
        Then arm for the top: the loop wakes for real deadlines and about once per
        ``SETTLE_AHEAD`` for stale entries (see the module docstring). A bucket with one
        entry really due is left whole: the pass that wakes for it settles the rest."""
        heap, buckets = self._heap, self._buckets
        while heap:
            when = heap[0]
            moved = _moved_later(buckets[when], when, ahead)
            if moved is None:
                break
            heapq.heappop(heap)
            del buckets[when]
            for target, due in moved:
                self._push(target, due)
        if heap and heap[0] < self._armed_at:
            self._arm(heap[0])


def _moved_later(
    bucket: Bucket, when: float, ahead: float
) -> list[tuple[TimerTarget, float]] | None:
    """The live entries of the bucket at ``when`` with the later deadlines they moved to;
    None when one of them is really due then (or its move is past ``ahead``)."""
    moved = []
    for target in _members(bucket):
        if target._timer_at != when:
            continue  # stale or cancelled
        clock = target._timer_clock
        if clock is None or clock.due <= when or when > ahead:
            return None
        moved.append((target, clock.due))
    return moved


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TimerQueue] = (
    weakref.WeakKeyDictionary()
)


def timer_queue(loop: asyncio.AbstractEventLoop) -> TimerQueue:
    """The loop's shared queue, created on first use."""
    queue = _queues.get(loop)
    if queue is None:
        queue = _queues[loop] = TimerQueue(loop)
    return queue
