"""The loop's shared timer queue, driven by a fake loop whose time moves by arithmetic.

The queue only needs ``loop.time()`` and ``loop.call_at()``; the fake loop runs
due callbacks when the test advances its clock, so every claim about *when* a
target runs is exact, not a guess with a margin.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import cast

import pytest

from peerwatch.aio.timers import AFTER_PASS_WAIT, COALESCE, SETTLE_AHEAD, TimerClock, TimerQueue
from peerwatch.core.config import Config
from peerwatch.core.liveness import Action, Liveness


class FakeHandle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """``time()`` and ``call_at()`` only; ``advance(to)`` runs what falls due, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._due: list[tuple[float, int, FakeHandle]] = []
        self._order = itertools.count()
        self.passes = 0  # callbacks run: timer passes, and what they scheduled

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(when, callback)
        heapq.heappush(self._due, (when, next(self._order), handle))
        return handle

    def call_soon(self, callback: Callable[[], None]) -> FakeHandle:
        """Run ``callback`` next, in order, before any timer (asyncio's ready queue runs
        before the timers that fell due meanwhile)."""
        return self.call_at(float("-inf"), callback)

    @property
    def armed(self) -> list[float]:
        return sorted(h.when for _, _, h in self._due if not h.cancelled)

    def advance(self, to: float) -> None:
        for _ in range(100_000):  # bounded: a queue that re-arms forever fails the test
            if not self._due or self._due[0][0] > to:
                break
            when, _, handle = heapq.heappop(self._due)
            if handle.cancelled:
                continue
            self.now = max(self.now, when)
            self.passes += 1
            handle.callback()
        else:
            raise AssertionError("the timer queue spins")
        self.now = to


class Target:
    """Records every ``on_timer`` call; its real deadline can move without telling the queue."""

    def __init__(self, deadline: float | None) -> None:
        self._timer_at: float | None = None
        self._timer_clock: TimerClock | None = None  # on_timer decides, every time
        self.deadline = deadline
        self.calls: list[float] = []

    def on_timer(self, now: float) -> float | None:
        self.calls.append(now)
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None  # done: no more timers
        return self.deadline


@pytest.fixture
def loop() -> FakeLoop:
    return FakeLoop()


def queue_on(loop: FakeLoop) -> TimerQueue:
    return TimerQueue(cast(asyncio.AbstractEventLoop, loop))


def test_a_target_runs_at_its_deadline_not_before(loop: FakeLoop) -> None:
    queue = queue_on(loop)
    target = Target(10.0)
    queue.schedule(target, 10.0)
    loop.advance(9.99)
    assert target.calls == []
    loop.advance(10.0)
    assert target.calls == [10.0]
    assert len(queue) == 0 and loop.armed == []


def test_a_deadline_moved_later_is_found_when_the_old_entry_fires(loop: FakeLoop) -> None:
    """Moving a deadline later costs nothing at the time; the old entry re-arms it."""
    queue = queue_on(loop)
    target = Target(10.0)
    queue.schedule(target, 10.0)
    target.deadline = 25.0  # e.g. the peer was heard from: death moves out
    queue.schedule(target, 25.0)  # a later time than the entry: no new entry
    assert len(queue) == 1
    loop.advance(30.0)
    assert target.calls == [10.0, 25.0]


def test_an_earlier_deadline_fires_early(loop: FakeLoop) -> None:
    queue = queue_on(loop)
    target = Target(10.0)
    queue.schedule(target, 10.0)
    target.deadline = 3.0
    queue.schedule(target, 3.0)
    assert loop.armed == [3.0]  # one loop timer, re-armed earlier
    loop.advance(20.0)
    assert target.calls == [3.0]  # the stale 10.0 entry is dropped, not run


def test_cancelled_target_never_runs(loop: FakeLoop) -> None:
    queue = queue_on(loop)
    target = Target(5.0)
    queue.schedule(target, 5.0)
    queue.cancel(target)
    loop.advance(60.0)
    assert target.calls == []
    assert len(queue) == 0


def test_many_targets_run_in_deadline_order_on_one_loop_timer(loop: FakeLoop) -> None:
    queue = queue_on(loop)
    order: list[int] = []
    deadlines = [7.0, 1.0, 4.0, 9.0, 2.0, 4.5]

    class Named(Target):
        def __init__(self, index: int, deadline: float) -> None:
            super().__init__(deadline)
            self.index = index

        def on_timer(self, now: float) -> float | None:
            order.append(self.index)
            return super().on_timer(now)

    for index, deadline in enumerate(deadlines):
        queue.schedule(Named(index, deadline), deadline)
        assert len(loop.armed) == 1  # never one asyncio timer per target
    loop.advance(100.0)
    assert order == sorted(range(len(deadlines)), key=lambda i: deadlines[i])


def test_a_target_asking_for_now_again_runs_in_the_next_pass(loop: FakeLoop) -> None:
    """A target that returns a time already due must not spin the current pass."""
    queue = queue_on(loop)
    calls: list[float] = []

    class Eager:
        _timer_at: float | None = None
        _timer_clock: TimerClock | None = None

        def on_timer(self, now: float) -> float | None:
            calls.append(now)
            return now if len(calls) < 3 else None

    queue.schedule(Eager(), 1.0)
    loop.advance(1.0)
    assert calls == [1.0, 1.0, 1.0]  # three passes of the fake loop, not one spinning pass


def test_coalesced_entries_see_their_own_deadline(loop: FakeLoop) -> None:
    """Entries within COALESCE of the first run in its pass, each told its own deadline."""
    queue = queue_on(loop)
    first, second = Target(1.0), Target(1.0 + COALESCE / 2)
    queue.schedule(first, 1.0)
    queue.schedule(second, 1.0 + COALESCE / 2)
    loop.advance(1.0)
    assert first.calls == [1.0]
    assert second.calls == [1.0 + COALESCE / 2]


def test_a_thousand_deadlines_in_one_tick_run_in_one_pass(loop: FakeLoop) -> None:
    """A burst (1,000 peers silent since the same instant) is one pass of the queue, not
    one pass of the loop per deadline: entries within COALESCE of the first included."""
    queue = queue_on(loop)
    targets = [Target(1.0 + COALESCE * (i % 2) / 2) for i in range(1000)]
    for target in targets:
        assert target.deadline is not None
        queue.schedule(target, target.deadline)
    loop.advance(1.0)
    assert all(len(target.calls) == 1 for target in targets)
    assert loop.passes == 1


def test_each_target_of_a_pass_is_told_the_time_it_is_called(loop: FakeLoop) -> None:
    """A verdict's time is when it was reached: the last of a long pass is told the clock
    as it is then, not the time the pass began (a burst of 1,000 verdicts takes tens of ms)."""
    queue = queue_on(loop)
    work = 0.030

    class Slow(Target):
        def on_timer(self, now: float) -> float | None:
            result = super().on_timer(now)
            loop.now += work  # this target's own work takes time
            return result

    first, second, third = Slow(1.0), Slow(1.0), Slow(1.0 + COALESCE / 2)
    for target in (first, second, third):
        queue.schedule(target, cast(float, target.deadline))
    loop.advance(1.0)
    assert first.calls == [1.0]
    assert second.calls == [pytest.approx(1.0 + work)]
    assert third.calls == [pytest.approx(1.0 + 2 * work)]  # later than its own deadline too


def test_work_after_a_pass_runs_once_every_target_of_the_pass_ran(loop: FakeLoop) -> None:
    """``after_pass`` work (a verdict's close) waits for the whole pass, so what the pass
    woke runs first; it runs in order, in one callback; outside a pass, in the next one."""
    queue = queue_on(loop)
    order: list[str] = []

    class Closing(Target):
        def __init__(self, name: str) -> None:
            super().__init__(1.0)
            self.name = name

        def on_timer(self, now: float) -> float | None:
            order.append(f"decide {self.name}")
            loop.call_soon(lambda: order.append(f"wake {self.name}"))  # a handler's wake-up
            queue.after_pass(lambda: order.append(f"close {self.name}"))
            return None

    for name in "abc":
        queue.schedule(Closing(name), 1.0)
    loop.advance(1.0)
    assert order == [
        *(f"decide {n}" for n in "abc"),
        *(f"wake {n}" for n in "abc"),
        *(f"close {n}" for n in "abc"),
    ]
    assert loop.passes == 1 + 3 + 1  # the pass, three wake-ups, one callback for the closes
    order.clear()
    assert not queue.in_pass
    queue.after_pass(lambda: order.append("outside"))
    assert order == []
    loop.advance(loop.now)
    assert order == ["outside"]


class Closing(Target):
    """Decides (its work takes ``work`` s of the clock), then asks for its close after."""

    def __init__(
        self, loop: FakeLoop, queue: TimerQueue, order: list[str], name: str, at: float
    ) -> None:
        super().__init__(at)
        self.loop, self.queue, self.order, self.name = loop, queue, order, name
        self.work = 0.005

    def on_timer(self, now: float) -> float | None:
        self.order.append(f"decide {self.name}")
        self.queue.after_pass(lambda: self.order.append(f"close {self.name}"))
        self.loop.now += self.work
        return None


def test_work_after_a_pass_waits_for_the_deadlines_due_meanwhile(loop: FakeLoop) -> None:
    """A burst spread over several passes is decided whole before its closes run."""
    queue = queue_on(loop)
    order: list[str] = []
    for target in (
        Closing(loop, queue, order, "a", 1.0),
        Closing(loop, queue, order, "b", 1.0 + 2 * COALESCE),  # due once a's pass is over
    ):
        queue.schedule(target, cast(float, target.deadline))
    loop.advance(2.0)
    assert order == ["decide a", "decide b", "close a", "close b"]


def test_work_after_a_pass_waits_no_longer_than_after_pass_wait(loop: FakeLoop) -> None:
    queue = queue_on(loop)
    order: list[str] = []
    first = Closing(loop, queue, order, "a", 1.0)
    first.work = AFTER_PASS_WAIT * 2  # the next deadline is due, but a's close waited enough
    second = Closing(loop, queue, order, "b", 1.0 + 2 * COALESCE)
    for target in (first, second):
        queue.schedule(target, cast(float, target.deadline))
    loop.advance(2.0)
    assert order == ["decide a", "close a", "decide b", "close b"]


class Clock:
    """A deadline kept in plain attributes, as ``Liveness`` keeps it."""

    def __init__(self, due: float, stall_threshold: float = 1.0) -> None:
        self.due = due
        self.armed = due
        self.stall_threshold = stall_threshold


class Clocked(Target):
    """A target whose deadline the queue may read without calling it."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock.due)
        self._timer_clock: TimerClock | None = clock
        self.clock = clock
        self.armed_when_called: list[float] = []

    def on_timer(self, now: float) -> float | None:
        self.calls.append(now)
        self.armed_when_called.append(self.clock.armed)
        self.clock.due = now + 100.0  # did its work; next in 100 s
        return self.clock.due


def test_a_deadline_moved_later_is_re_armed_without_calling_the_target(loop: FakeLoop) -> None:
    queue = queue_on(loop)
    clock = Clock(10.0)
    target = Clocked(clock)
    queue.schedule(target, 10.0)
    clock.due = 25.0  # the peer was heard: the deadline moved, the queue was not told
    loop.advance(24.9)
    assert target.calls == []  # the entry at 10 was re-pushed, the target not touched
    assert loop.armed == [25.0] and clock.armed == 25.0
    loop.advance(25.0)
    assert target.calls == [25.0]


def test_the_loop_is_not_armed_for_an_entry_whose_deadline_moved(loop: FakeLoop) -> None:
    """After a pass the heap top is settled first: the loop wakes only for real deadlines,
    and for stale entries at most once per SETTLE_AHEAD."""
    queue = queue_on(loop)
    first, soon, later = Clock(5.0), Clock(5.0 + SETTLE_AHEAD / 2), Clock(5.0 + 3 * SETTLE_AHEAD)
    due_first, moving_soon, moving_later = Clocked(first), Clocked(soon), Clocked(later)
    for target, clock in ((due_first, first), (moving_soon, soon), (moving_later, later)):
        queue.schedule(target, clock.due)
    soon.due, later.due = 50.0, 60.0
    loop.advance(5.0)
    assert due_first.calls == [5.0]
    # the entry within SETTLE_AHEAD was re-pushed already; the one further away waits
    assert loop.armed == [5.0 + 3 * SETTLE_AHEAD]
    loop.advance(5.0 + 3 * SETTLE_AHEAD)
    assert loop.armed == [50.0]  # woken once for it, no call: nothing is due before 50
    loop.advance(100.0)
    assert moving_soon.calls == [50.0] and moving_later.calls == [60.0]


def test_a_stale_entry_surfacing_past_the_stall_threshold_still_calls_the_target(
    loop: FakeLoop,
) -> None:
    """Our process stalled: the machine must hear of it even if the peer's bytes, read
    first, moved its deadline meanwhile (liveness rule 4)."""
    queue = queue_on(loop)
    clock = Clock(10.0, stall_threshold=1.0)
    target = Clocked(clock)
    queue.schedule(target, 10.0)
    loop.now = 13.0  # the loop was blocked from 10 to 13 s
    clock.due = 20.0  # bytes read before the timer ran moved the deadline
    loop.advance(13.0)
    assert target.calls == [13.0]
    assert target.armed_when_called == [10.0]  # so it sees it ran 3 s late


def test_a_clocked_deadline_moved_earlier_is_scheduled_as_before(loop: FakeLoop) -> None:
    queue = queue_on(loop)
    clock = Clock(10.0)
    target = Clocked(clock)
    queue.schedule(target, 10.0)
    clock.due = 4.0
    queue.schedule(target, 4.0)
    assert loop.armed == [4.0] and clock.armed == 4.0
    loop.advance(4.0)
    assert target.calls == [4.0]


class Watched:
    """What ``aio.Connection`` does on a timer, with a real liveness machine as its clock."""

    def __init__(self, config: Config, now: float) -> None:
        self._timer_at: float | None = None
        self.live = Liveness(config, now)
        self._timer_clock: TimerClock | None = self.live
        self.calls: list[tuple[float, Action]] = []

    def on_timer(self, now: float) -> float | None:
        action = self.live.handle_timer(now)
        self.calls.append((now, action))
        if action is Action.DEAD:
            return None
        if action is Action.PING:
            self.live.ping_sent(now)
        return self.live.next_deadline()


def test_a_connection_hearing_from_its_peer_is_never_touched_until_it_goes_silent(
    loop: FakeLoop,
) -> None:
    """The idle server's case: the peer pings every interval; the timer never calls the
    connection, and the verdict still comes exactly at the last evidence + timeout."""
    queue = queue_on(loop)
    conn = Watched(Config(interval=10.0, timeout=30.0), 0.0)
    conn.live.start(0.0, answer_delay=5.0)  # the accepting side waits before pinging
    queue.schedule(conn, conn.live.due)
    for beat in range(1, 100):  # 990 s of a peer pinging every 10 s
        loop.advance(beat * 10.0 - 0.001)
        conn.live.on_receive(beat * 10.0)
    assert conn.calls == []
    assert len(queue) == 1  # one entry per connection, not one per heartbeat
    loop.advance(10_000.0)
    # the peer fell silent after 990 s: the server pings at 990 + 15 and every 10 s after,
    # and the verdict comes at 990 + 30 to the millisecond
    assert conn.calls == [(1005.0, Action.PING), (1015.0, Action.PING), (1020.0, Action.DEAD)]
    assert conn.live.stalls == 0


def test_targets_due_at_one_time_share_one_entry_and_run_in_the_order_scheduled(
    loop: FakeLoop,
) -> None:
    """batch_pings' case: every connection falls due on the same grid points. One time in the
    heap per point, its targets walked in the order they were scheduled, in one pass."""
    queue = queue_on(loop)
    order: list[Target] = []

    class Ordered(Target):
        def on_timer(self, now: float) -> float | None:
            order.append(self)
            return super().on_timer(now)

    targets = [Ordered(5.0) for _ in range(1000)]
    for target in targets:
        queue.schedule(target, 5.0)
    assert queue._heap == [5.0] and len(queue) == 1000 and loop.armed == [5.0]
    loop.advance(5.0)
    assert order == targets and loop.passes == 1
    assert all(t.calls == [5.0] for t in targets) and len(queue) == 0 and not queue._heap


def test_a_shared_time_keeps_the_due_drops_the_cancelled_and_moves_the_rest(
    loop: FakeLoop,
) -> None:
    """One time, three fates: really due (called then), cancelled (never), moved later
    without telling the queue (called at its new deadline only)."""
    queue = queue_on(loop)
    due, cancelled, moved = Clock(5.0), Clock(5.0), Clock(5.0)
    on_time, gone, later = Clocked(due), Clocked(cancelled), Clocked(moved)
    for target in (gone, later, on_time):
        queue.schedule(target, 5.0)
    queue.cancel(gone)
    moved.due = 7.5
    loop.advance(5.0)
    assert on_time.calls == [5.0] and gone.calls == [] and later.calls == []
    assert loop.armed == [7.5]
    loop.advance(200.0)
    assert later.calls == [7.5, 107.5] and gone.calls == [] and on_time.calls == [5.0, 105.0]


def test_a_time_holding_only_moved_entries_is_settled_without_waking(loop: FakeLoop) -> None:
    """Every entry of the time after a pass moved later: the time is dropped and its entries
    re-pushed before the loop is armed, so the loop never wakes for it."""
    queue = queue_on(loop)
    first = Clocked(Clock(1.0))
    clocks = [Clock(1.5) for _ in range(3)]
    moving = [Clocked(clock) for clock in clocks]
    queue.schedule(first, 1.0)
    for target, clock in zip(moving, clocks, strict=True):
        queue.schedule(target, clock.due)
        clock.due = 30.0
    loop.advance(1.0)
    assert loop.armed == [30.0] and queue._heap[0] == 30.0
    passes = loop.passes
    loop.advance(29.9)
    assert loop.passes == passes and all(t.calls == [] for t in moving)
    loop.advance(30.0)
    assert all(t.calls == [30.0] for t in moving)


class SelfScheduling(Target):
    """Asks the queue for ``early`` from inside ``on_timer`` (as a connection's ``_arm``
    does when its handler runs), then returns a later deadline."""

    def __init__(self, queue: TimerQueue, early: float, later: float) -> None:
        super().__init__(None)
        self.queue, self.early, self.later = queue, early, later

    def on_timer(self, now: float) -> float | None:
        self.calls.append(now)
        if len(self.calls) == 1:
            self.queue.schedule(self, self.early)
            return self.later
        return None


def test_a_deadline_returned_past_the_pass_keeps_an_earlier_one_asked_for_in_the_pass(
    loop: FakeLoop,
) -> None:
    queue = queue_on(loop)
    target = SelfScheduling(queue, early=5.0, later=20.0)
    queue.schedule(target, 1.0)
    loop.advance(1.0)
    assert loop.armed == [5.0]  # the later deadline did not replace the earlier one
    loop.advance(30.0)
    assert target.calls == [1.0, 5.0]


def test_deadlines_returned_past_the_pass_are_queued_and_armed_once(loop: FakeLoop) -> None:
    queue = queue_on(loop)
    targets = [Target(None) for _ in range(100)]
    for target in targets:
        target.deadline = 10.0
        queue.schedule(target, 1.0)
    loop.advance(1.0)
    assert all(target.calls == [1.0] for target in targets)
    assert len(queue) == 100 and loop.armed == [10.0]
    loop.advance(10.0)
    assert all(target.calls == [1.0, 10.0] for target in targets)
    assert len(queue) == 0 and loop.armed == []
