"""One timer structure per event loop, not one asyncio timer per connection.

A heap of ``(when, order, target)`` entries with lazy invalidation: a target's
deadline usually moves *later* (every byte received pushes the death deadline
out), and pushing a heap entry on every receive would cost more than it saves.
So a target is only re-pushed when it asks for an *earlier* time than the entry
it already has; a stale entry that fires early simply makes the target compute
its real deadline and re-arm. The queue owns exactly one ``loop.call_at``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from typing import Protocol

#: Entries due within this many seconds of the earliest are run in the same pass.
COALESCE = 0.001


class TimerTarget(Protocol):
    _timer_at: float | None

    def on_timer(self, now: float) -> float | None:
        """Run due work; return the next absolute deadline, or None for no more timers."""


class TimerQueue:
    __slots__ = ("_armed_at", "_handle", "_heap", "_loop", "_order")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, TimerTarget]] = []
        self._order = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, target: TimerTarget, when: float) -> None:
        """Ensure ``target.on_timer`` runs at ``when`` or earlier."""
        current = target._timer_at
        if current is not None and current <= when:
            return  # an entry at or before `when` exists; it will re-arm as needed
        target._timer_at = when
        heapq.heappush(self._heap, (when, next(self._order), target))
        if when < self._armed_at:
            self._arm(when)

    def cancel(self, target: TimerTarget) -> None:
        """Forget ``target``; its heap entries are dropped when they surface."""
        target._timer_at = None

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        self._handle = self._loop.call_at(when, self._run)

    def _run(self) -> None:
        self._handle = None
        self._armed_at = float("inf")
        heap = self._heap
        now = self._loop.time()
        horizon = now + COALESCE
        pop = heapq.heappop
        again: list[tuple[TimerTarget, float]] = []
        while heap and heap[0][0] <= horizon:
            when, _, target = pop(heap)
            if target._timer_at != when:
                continue  # stale or cancelled entry
            target._timer_at = None
            # a coalesced entry fires up to COALESCE early: it sees its own deadline as now
            following = target.on_timer(max(now, when))
            if following is not None:
                again.append((target, following))
        for target, following in again:  # next pass at the earliest: never spin in this one
            self.schedule(target, following)
        if heap and heap[0][0] < self._armed_at:
            self._arm(heap[0][0])


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TimerQueue] = (
    weakref.WeakKeyDictionary()
)


def timer_queue(loop: asyncio.AbstractEventLoop) -> TimerQueue:
    """The loop's shared queue, created on first use."""
    queue = _queues.get(loop)
    if queue is None:
        queue = _queues[loop] = TimerQueue(loop)
    return queue
