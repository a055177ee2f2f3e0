"""The background event loop that keeps heartbeats going while blocking callers are busy.

Blocking code cannot answer a PING while it computes, sleeps or waits on a
database. So every ``peerwatch.sync`` connection lives on one shared asyncio
loop in a daemon thread, and the caller's thread only hands it coroutines and
waits for their results.

Hand-over rule: whether a result reaches the caller is decided on the loop
thread only. When the caller's wait runs out, it asks the loop thread to cancel
the task; a task that already finished (say, ``recv`` took a message from the
inbox and scheduled its ACK) hands its result to the caller anyway, and one
still waiting is cancelled before it takes anything. So a message is returned
to exactly one caller or stays queued and unacknowledged, never dropped
between the two threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: Default bound of every blocking call, in seconds.
DEFAULT_TIMEOUT = 30.0
#: How long the caller waits for the loop thread to settle a task it asked to cancel.
#: The loop thread runs only peerwatch callbacks, so this is reached only when it is wedged.
SETTLE_GRACE = 10.0


class LoopThread:
    """An asyncio loop running forever in a daemon thread."""

    def __init__(self, name: str = "peerwatch-sync") -> None:
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run ``coro`` on the loop and wait at most ``timeout`` seconds for its result.

        On timeout the coroutine is cancelled and ``TimeoutError`` raised, unless it
        finished meanwhile: then its result is returned (see the hand-over rule above).
        ``timeout=None`` is for waits the connection itself bounds (its heartbeats
        reach a verdict), never for a user's call deadline.
        """
        try:
            if timeout is not None:
                check_timeout(timeout)
            if threading.current_thread() is self.thread:
                raise RuntimeError(
                    "blocking peerwatch.sync call made from its own event loop thread"
                )
        except BaseException:
            coro.close()
            raise
        outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
        started: list[asyncio.Task[T]] = []

        def start() -> None:
            task = self.loop.create_task(coro)
            started.append(task)
            task.add_done_callback(lambda done: _settle(outcome, done, timeout))

        def cancel() -> None:
            # call_soon_threadsafe is FIFO, so start() has run: the task exists
            started[0].cancel()

        self.loop.call_soon_threadsafe(start)
        try:
            return outcome.result(timeout)
        except concurrent.futures.TimeoutError:
            pass
        except BaseException:  # KeyboardInterrupt in the caller: do not leave the task behind
            self.loop.call_soon_threadsafe(cancel)
            raise
        self.loop.call_soon_threadsafe(cancel)
        try:
            return outcome.result(SETTLE_GRACE)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(
                f"no result within {timeout} s, and the peerwatch loop thread did not answer"
                f" the cancellation within {SETTLE_GRACE} s"
            ) from None

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)


def _settle(outcome: concurrent.futures.Future[T], task: asyncio.Task[T], timeout: Any) -> None:
    """Pass a finished task's outcome to the caller's future: runs on the loop thread only."""
    if task.cancelled():
        # only run() cancels these tasks, and only after the caller's wait ran out
        outcome.set_exception(TimeoutError(f"no result within {timeout} s"))
        return
    error = task.exception()
    if error is not None:
        outcome.set_exception(error)
    else:
        outcome.set_result(task.result())


def check_timeout(timeout: float) -> None:
    if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(
            f"timeout must be a positive finite number of seconds, got {timeout!r}:"
            " no peerwatch.sync call may block forever"
        )


_shared: LoopThread | None = None
_shared_lock = threading.Lock()


def shared_loop() -> LoopThread:
    """The process-wide loop thread, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.thread.is_alive():
            _shared = LoopThread()
        return _shared
