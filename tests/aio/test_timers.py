"""The loop's shared TimerQueue on a real loop: order, lazy re-arming, cancel, coalescing."""

from __future__ import annotations

import asyncio

import pytest

from peerwatch.aio.timers import COALESCE, TimerClock, TimerQueue, timer_queue

pytestmark = pytest.mark.timeout(30)


class Target:
    """Records each run; asks to run again at the times in ``then`` (one per run)."""

    def __init__(self, name: str, log: list[tuple[str, float]], then: list[float] | None = None):
        self._timer_at: float | None = None
        self._timer_clock: TimerClock | None = None  # on_timer decides, every time
        self.name = name
        self.log = log
        self.then = list(then or [])

    def on_timer(self, now: float) -> float | None:
        self.log.append((self.name, now))
        return self.then.pop(0) if self.then else None


async def settle(loop: asyncio.AbstractEventLoop, until: float) -> None:
    await asyncio.sleep(max(0.0, until - loop.time()) + 0.02)


async def test_targets_run_in_deadline_order_on_one_loop_timer() -> None:
    loop = asyncio.get_running_loop()
    queue = TimerQueue(loop)
    log: list[tuple[str, float]] = []
    start = loop.time()
    for name, delay in (("c", 0.06), ("a", 0.02), ("b", 0.04)):
        queue.schedule(Target(name, log), start + delay)
    handles = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    assert len(handles) == 1  # one call_at for the whole queue
    await settle(loop, start + 0.06)
    assert [name for name, _ in log] == ["a", "b", "c"]
    assert all(now >= start + d for (_, now), d in zip(log, (0.02, 0.04, 0.06), strict=True))


async def test_a_later_deadline_is_not_pushed_and_the_early_entry_re_arms() -> None:
    loop = asyncio.get_running_loop()
    queue = TimerQueue(loop)
    log: list[tuple[str, float]] = []
    start = loop.time()
    target = Target("t", log)
    queue.schedule(target, start + 0.02)
    queue.schedule(target, start + 0.05)  # later: the entry at 0.02 stands
    assert len(queue) == 1 and target._timer_at == start + 0.02
    queue.schedule(target, start + 0.01)  # earlier: pushed
    assert len(queue) == 2 and target._timer_at == start + 0.01
    await settle(loop, start + 0.02)
    assert len(log) == 1  # the stale entry at 0.02 was dropped, not run again


async def test_cancel_forgets_a_target() -> None:
    loop = asyncio.get_running_loop()
    queue = TimerQueue(loop)
    log: list[tuple[str, float]] = []
    start = loop.time()
    target = Target("t", log)
    queue.schedule(target, start + 0.02)
    queue.cancel(target)
    await settle(loop, start + 0.02)
    assert log == [] and len(queue) == 0


async def test_a_returned_deadline_runs_in_a_later_pass_never_spinning() -> None:
    loop = asyncio.get_running_loop()
    queue = TimerQueue(loop)
    log: list[tuple[str, float]] = []
    start = loop.time()
    # asks again for a time already past: it must run in the next pass, not loop here
    target = Target("t", log, then=[start, start, start + 0.03])
    queue.schedule(target, start + 0.01)
    await settle(loop, start + 0.03)
    assert len(log) == 4
    assert log[-1][1] >= start + 0.03


async def test_coalesced_entries_run_together_and_see_their_own_deadline() -> None:
    loop = asyncio.get_running_loop()
    queue = TimerQueue(loop)
    log: list[tuple[str, float]] = []
    start = loop.time()
    queue.schedule(Target("first", log), start + 0.02)
    queue.schedule(Target("close", log), start + 0.02 + COALESCE / 2)
    await settle(loop, start + 0.02)
    assert [name for name, _ in log] == ["first", "close"]
    ran_at = log[0][1]
    # run early by at most COALESCE, the coalesced target is told its own deadline at least,
    # and never a time before the first was told (each is told the clock when it is called)
    assert max(ran_at, start + 0.02 + COALESCE / 2) <= log[1][1] <= loop.time()


async def test_one_queue_per_loop() -> None:
    loop = asyncio.get_running_loop()
    assert timer_queue(loop) is timer_queue(loop)
    other = asyncio.new_event_loop()
    try:
        assert timer_queue(other) is not timer_queue(loop)
    finally:
        other.close()
