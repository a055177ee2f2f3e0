"""An asyncio event loop living in a thread inside one lab host's network namespace.

A connection that reconnects by itself (a resumable session) opens new sockets
long after it was created, so it is not enough to create one socket inside the
namespace: every socket its event loop will ever open must be born there.
setns(2) is per thread, so a thread that enters the namespace for its whole life
and runs the loop there does exactly that, in the test's own process: the test
sees both ends' objects directly (no agent protocol to write), and a fault
harness can run a client on kang and a server on kodos side by side.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from peerwatch.lab.netns import LabError
from peerwatch.lab.states import inside_netns

T = TypeVar("T")

#: How long leaving waits for the loop's tasks to finish after they are cancelled.
STOP_WAIT = 5.0


class NamespaceLoop:
    """``with NamespaceLoop(netns) as loop: loop.run(coro(), timeout=...)``.

    Leaving the block cancels every task still running in the loop, waits for
    them (bounded) and closes the loop, so no socket outlives the namespace.
    """

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"loop-{netns}", daemon=True)

    def __enter__(self) -> NamespaceLoop:
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._loop is None:
            raise LabError(f"no event loop in {self.netns}: {self._failure!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` in the namespace's loop; the future is safe to wait on from any thread."""
        if self._loop is None or self._loop.is_closed():
            coro.close()
            raise LabError(f"the event loop in {self.netns} is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` in the namespace and return its result; cancel it past ``timeout``."""
        future = self.submit(coro)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed() and self._thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=STOP_WAIT + 5)

    def _main(self) -> None:
        try:
            with inside_netns(self.netns):
                loop = asyncio.new_event_loop()
                self._loop = loop
                self._ready.set()
                try:
                    loop.run_forever()
                finally:
                    _cancel_all(loop)
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.close()
        except BaseException as exc:  # reported by __enter__, which waits for _ready
            self._failure = exc
        finally:
            self._ready.set()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel every task, and those their clean-up starts (a server closing its peers), bounded."""
    deadline = loop.time() + STOP_WAIT
    while (tasks := [t for t in asyncio.all_tasks(loop) if not t.done()]) and (
        left := deadline - loop.time()
    ) > 0:
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.wait(tasks, timeout=left))
