"""The background event loop that keeps heartbeats going while blocking callers are busy.

Blocking code cannot answer a PING while it computes, sleeps or waits on a
database. So every ``peerwatch.sync`` connection lives on one shared asyncio
loop in a daemon thread, and the caller's thread only hands it coroutines and
waits for their results, each wait bounded by a timeout.
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

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop and wait at most ``timeout`` seconds for its result.

        On timeout the coroutine is cancelled and ``TimeoutError`` raised; the
        connection stays usable (a message being waited for stays queued).
        """
        try:
            check_timeout(timeout)
        except ValueError:
            coro.close()
            raise
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("blocking peerwatch.sync call made from its own event loop thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no result within {timeout} s") from None

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)


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
