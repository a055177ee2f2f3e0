"""Blocking API semantics: no message lost to a call timeout, settings named as in asyncio,
iteration bounded by the heartbeats and not by a call deadline."""

from __future__ import annotations

import asyncio
import queue
import random
import signal
import time

import pytest
from peers import peer

import peerwatch
from peerwatch import Cause, sync
from peerwatch.sync.loop import LoopThread

pytestmark = pytest.mark.timeout(90)


def test_recv_with_tiny_timeouts_returns_every_acknowledged_message() -> None:
    """Each message the sender saw acknowledged reaches the caller, in order, exactly once.

    recv() is given 0.3-20 ms, so its wait often ends just as a message is handed over;
    the sender sends the next message only once the previous one is acknowledged.
    """
    count = 1000
    rng = random.Random(8)
    with peer("sender", "--count", str(count)) as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        conn = sync.connect("127.0.0.1", port, interval=0.2, timeout=2.0)
        received: list[bytes] = []
        timeouts = 0
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            try:
                message = conn.recv(timeout=rng.uniform(0.0003, 0.02))
            except TimeoutError:
                timeouts += 1
                continue
            if message == b"end":
                break
            received.append(message)
        assert proc.stdout.readline().split() == ["SENT", str(count)]  # all acknowledged
        conn.close()
    assert timeouts > 100  # the race was exercised, not avoided
    missing = sorted(set(range(count)) - {int(m) for m in received})
    assert missing == [], f"{len(missing)} acknowledged messages never returned: {missing[:10]}"
    assert received == [b"%d" % i for i in range(count)]


def test_connect_timeout_is_the_heartbeat_timeout_as_in_asyncio() -> None:
    """``timeout=1.0`` on sync.connect: a SIGSTOPped peer is HUNG within about 1 s, not 5."""
    with peer("sender", "--count", "0") as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        conn = sync.connect("127.0.0.1", port, interval=0.2, timeout=1.0)
        assert (conn.config.interval, conn.config.timeout) == (0.2, 1.0)
        assert conn.recv(timeout=5) == b"end"
        proc.send_signal(signal.SIGSTOP)  # its kernel still acknowledges, the process is mute
        stopped = time.monotonic()
        verdict = conn.wait_closed(timeout=10)
        took = time.monotonic() - stopped
    assert verdict.cause is Cause.HUNG
    assert 0.9 <= took < 1.0 + 1.0, f"found after {took:.2f} s with timeout=1.0"


def test_serve_timeout_is_the_heartbeat_timeout_as_in_asyncio() -> None:
    """``timeout=1.0`` on sync.serve: the handler's peer, SIGSTOPped, is found within ~1 s."""
    outcomes: queue.Queue[tuple[float, float, BaseException | None]] = queue.Queue()

    def handler(conn: sync.Connection) -> None:
        try:
            for _ in conn:
                pass
        except peerwatch.PeerDead as dead:
            outcomes.put((time.monotonic(), conn.config.timeout, dead))
        else:
            outcomes.put((time.monotonic(), conn.config.timeout, None))

    with (
        sync.serve(handler, "127.0.0.1", 0, interval=0.2, timeout=1.0) as server,
        peer("idler", "--port", str(server.port)) as proc,
    ):
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "CONNECTED"
        time.sleep(0.3)  # heartbeats flow
        proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        ended, timeout, error = outcomes.get(timeout=10)
    assert timeout == 1.0
    assert isinstance(error, peerwatch.PeerDead) and error.verdict.cause is Cause.HUNG
    assert ended - stopped < 1.0 + 1.0, f"found after {ended - stopped:.2f} s with timeout=1.0"


def test_sync_serve_binds_within_its_own_bound_and_refuses_a_bad_heartbeat_timeout() -> None:
    with pytest.raises(peerwatch.ConfigError, match="timeout"):
        sync.serve(lambda conn: None, "127.0.0.1", 0, interval=1.0, timeout=0.5)
    with pytest.raises(ValueError, match="may block forever"):
        sync.connect("127.0.0.1", 1, connect_timeout=0)


@pytest.mark.slow
def test_iteration_outlives_every_call_deadline_while_heartbeats_flow() -> None:
    """``for message in conn`` waits past DEFAULT_TIMEOUT for a live idle peer; ends quietly."""
    outcomes: queue.Queue[tuple[list[bytes], BaseException | None]] = queue.Queue()

    def collect(conn: sync.Connection) -> None:
        got: list[bytes] = []
        try:
            for message in conn:
                got.append(message)
        except BaseException as exc:  # reported to the test, whatever it is
            outcomes.put((got, exc))
        else:
            outcomes.put((got, None))

    with sync.serve(collect, "127.0.0.1", 0, interval=0.2, timeout=1.0) as server:
        with sync.connect("127.0.0.1", server.port, interval=0.2, timeout=1.0) as conn:
            time.sleep(sync.DEFAULT_TIMEOUT + 1.5)  # idle, but heartbeats flow both ways
            assert conn.verdict is None
            conn.send(b"late", timeout=5)
            conn.close("done")
        got, error = outcomes.get(timeout=10)
    assert error is None, f"iteration ended with {error!r}"
    assert got == [b"late"]


def test_a_result_reached_after_the_callers_deadline_is_handed_over_not_dropped() -> None:
    """The loop thread decides: a task that finished before the cancellation came counts."""
    runner = LoopThread("test-handover")
    try:

        async def takes_then_returns() -> str:
            time.sleep(0.3)  # holds the loop thread past the caller's 0.05 s: the cancel waits
            return "taken"

        assert runner.run(takes_then_returns(), 0.05) == "taken"

        cancelled: list[bool] = []

        async def waits_forever() -> None:
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        started = time.monotonic()
        with pytest.raises(TimeoutError):
            runner.run(waits_forever(), 0.05)
        assert cancelled == [True]  # cancelled on the loop thread before the caller returned
        assert time.monotonic() - started < 2.0
    finally:
        runner.stop()
