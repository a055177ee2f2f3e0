"""``sync.connect(..., resume=True)``: the blocking API over a resumable session.

The server and an RST middlebox (``resumekit.Cutter``) run on their own loop in
another thread; the blocking client runs on the shared sync loop, as a user's
program would. Cuts in the middle of a stream must cost nothing: every echo
once, in order, each lost connection in ``history``, subscribers told.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "aio"))
from resumekit import Cutter

import peerwatch
from peerwatch import Cause, ConfigError, ResumableConnection, sync
from peerwatch.aio.outages import Lost, Resumed, SessionEvent
from peerwatch.sync.loop import LoopThread

pytestmark = pytest.mark.timeout(60)
FAST = {"interval": 0.2, "timeout": 1.0}
COUNT = 300
CUTS = (60, 140, 220)  # after these many echoes came back


class Far:
    """A resumable echo server behind a Cutter, on a loop thread of its own."""

    def __init__(self) -> None:
        self.thread = LoopThread("far-side")
        self.cutter: Cutter | None = None
        self._stop = asyncio.Event()
        self._started = threading.Event()
        self._done: Future[None] | None = None
        self.ended: list[Cause] = []  # each session's end as its handler saw it

    async def echo(self, session: ResumableConnection) -> None:
        async for message in session:
            await session.enqueue(message)
        self.ended.append((await session.wait_closed()).cause)

    def start(self) -> Far:
        self._done = asyncio.run_coroutine_threadsafe(self._run(), self.thread.loop)
        assert self._started.wait(10), "the far side did not start"
        return self

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        serving = peerwatch.serve(self.echo, "127.0.0.1", 0, resume_window=10.0, **FAST)
        async with serving as server, Cutter(server.port) as cutter:
            self.cutter = cutter
            self._started.set()
            await self._stop.wait()

    def call(self, fn: Callable[[], int]) -> int:
        """Run ``fn()`` on the far side's loop and return its result."""

        async def run() -> int:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.thread.loop).result(5)

    def stop(self) -> None:
        self.thread.loop.call_soon_threadsafe(self._stop.set)
        if self._done is not None:
            self._done.result(10)
        self.thread.loop.call_soon_threadsafe(self.thread.loop.stop)
        self.thread.thread.join(5)


@pytest.fixture
def far() -> Iterator[Far]:
    far = Far().start()
    try:
        yield far
    finally:
        far.stop()


def test_blocking_calls_survive_resets_exactly_once_in_order(far: Far) -> None:
    assert far.cutter is not None
    events: list[SessionEvent] = []
    with sync.connect("127.0.0.1", far.cutter.port, resume=True, resume_timeout=20, **FAST) as conn:
        assert isinstance(conn, sync.ResumableConnection)
        conn.subscribe(events.append)
        assert conn.session_id is not None and len(conn.session_id) == 16
        got: list[bytes] = []
        for i in range(COUNT):
            conn.enqueue(b"m%04d" % i, timeout=10)
            if i % 10 == 9:  # a window of 10 in flight, then the echoes
                got += [conn.recv(timeout=10) for _ in range(10)]
                if len(got) in CUTS:
                    assert far.call(far.cutter.cut) == 1
        conn.drain(timeout=10)
        verdict = conn.close("done", timeout=10)
    assert got == [b"m%04d" % i for i in range(COUNT)]  # once each, in order
    assert verdict.cause is Cause.LOCAL and not verdict.undelivered
    history = conn.history
    assert len(history) == len(CUTS)
    assert conn.attempts >= len(CUTS)
    assert all(outage.verdict.cause in (Cause.RESET, Cause.EOF) for outage in history)
    assert all(outage.outage is not None for outage in history)
    assert [type(e) for e in events] == [Lost, Resumed] * len(CUTS)


def test_a_bad_resume_setting_is_one_error_before_any_connection() -> None:
    with pytest.raises(ConfigError, match="window must be a positive number"):
        sync.connect("127.0.0.1", 9, resume=True, resume_timeout=-1)


def test_no_server_is_a_verdict_not_a_hang() -> None:
    with pytest.raises(peerwatch.PeerDead) as caught:
        sync.connect("127.0.0.1", 9, resume=True, connect_timeout=5)
    assert caught.value.verdict.cause in (Cause.RESET, Cause.UNREACHABLE)


def test_close_during_an_outage_returns_at_once_and_says_goodbye_when_the_path_is_back(
    far: Far,
) -> None:
    cutter = far.cutter
    assert cutter is not None
    conn = sync.connect("127.0.0.1", cutter.port, resume=True, resume_timeout=20, **FAST)
    conn.send(b"before", timeout=10)
    assert conn.recv(timeout=10) == b"before"

    def cut_and_refuse() -> int:
        cutter.refusing = True  # every reconnect is reset: the server is out of reach
        return cutter.cut()

    assert far.call(cut_and_refuse) == 1
    verdict = conn.close("bye", timeout=10)  # detached: the local verdict at once
    assert verdict.cause is Cause.LOCAL
    with pytest.raises(TimeoutError):  # the server is still out of reach: nothing said yet
        conn.wait_farewell(timeout=0.5)
    assert far.ended == []  # its session waits for us

    def let_through() -> int:
        cutter.refusing = False
        return 0

    far.call(let_through)
    farewell = conn.wait_farewell(timeout=15)
    assert farewell is not None and farewell.said, farewell
    deadline = time.monotonic() + 10
    while not far.ended and time.monotonic() < deadline:
        time.sleep(0.05)
    assert far.ended == [Cause.GOODBYE]  # the server's handler ended with our goodbye
