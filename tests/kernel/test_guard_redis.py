"""guard() on the sockets of a real client library (redis-py) talking to a real redis-server.

The server runs in a network namespace this test creates; the fault is an
nftables rule there that drops every packet, so the server host vanishes
without a FIN or an RST, like a host whose power was cut. Each test runs a
guarded and an unguarded client side by side: the guarded one must fail within
the bound (+10 %), the unguarded one must still be hanging at that moment,
which is what shows the guard matters.

redis-py 8 enables keepalive itself (idle 30 s, 3 probes every 5 s): the
unguarded client would notice an idle dead server after about 45 s and data
in flight after ``tcp_retries2`` (about 15 minutes).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from diag_netns import NetnsHost
from peerwatch.kernel.guarding import guard

redis = pytest.importorskip("redis")
from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

TIMEOUT = 3.0
BOUND = TIMEOUT * 1.1  # the bound asked for, plus 10 %
NFT_ALLOWANCE = 0.25  # the fault is applied by a subprocess; its own duration is measured too


def guarded_connect(timeout: float) -> Callable[[object], None]:
    """redis-py hook run on every new pooled connection: guard its socket, then handshake."""

    def connect(connection: object) -> None:
        guard(connection._sock, timeout=timeout)  # type: ignore[attr-defined]
        connection.on_connect()  # type: ignore[attr-defined]

    return connect


def client(host: NetnsHost, *, guarded: bool) -> redis.Redis:
    # no retries: a retry would reconnect to the dead host and hide the failure we measure
    kwargs: dict[str, object] = {"retry": Retry(NoBackoff(), 0)}
    if guarded:
        kwargs["redis_connect_func"] = guarded_connect(TIMEOUT)
    return redis.Redis(host=host.addr, port=6379, **kwargs)


@dataclass
class Outcome:
    error: BaseException | None = None
    finished_at: float | None = None


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, Outcome]:
    outcome = Outcome()

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.error = exc
        outcome.finished_at = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def unblock(r: redis.Redis) -> None:
    """Shut down the sockets of a client still hanging on a dead host, so its thread ends.

    SO_LINGER 0 first: when redis-py then closes the socket, the kernel drops it at
    once instead of keeping an orphan that retransmits its FIN to the vanished host
    for minutes after the test.
    """
    for conn in list(r.connection_pool._in_use_connections):
        sock = conn._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def redis_host(netns_host: NetnsHost) -> Iterator[NetnsHost]:
    netns_host.start_redis()
    yield netns_host


def assert_kernel_gave_up(error: BaseException | None) -> None:
    # redis-py turns the socket's ETIMEDOUT into ConnectionError, or into its
    # TimeoutError("Timeout reading from socket") because Python maps errno 110 to
    # TimeoutError, which is socket.timeout: both carry the kernel's verdict.
    assert isinstance(error, (redis.ConnectionError, redis.TimeoutError)), repr(error)


def wait_blocked_in(r: redis.Redis, command: str, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(c.get("cmd") == command for c in r.client_list()) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"clients never blocked in {command}")


def test_guarded_redis_client_blocked_on_an_idle_connection_fails_within_timeout(
    redis_host: NetnsHost,
) -> None:
    """BLPOP blocks with nothing in flight: only keepalive can notice the server vanish."""
    guarded, unguarded, observer = (
        client(redis_host, guarded=True),
        client(redis_host, guarded=False),
        client(redis_host, guarded=False),
    )
    guarded_thread, guarded_outcome = in_thread(lambda: guarded.blpop(["queue"], timeout=0))
    plain_thread, plain_outcome = in_thread(lambda: unguarded.blpop(["queue"], timeout=0))
    try:
        wait_blocked_in(observer, "blpop", 2)
        observer.close()
        time.sleep(0.2)  # let the last ACKs land: the connections are now quiet
        fault_started = time.monotonic()
        redis_host.blackhole()
        fault_done = time.monotonic()
        assert fault_done - fault_started < NFT_ALLOWANCE

        guarded_thread.join(timeout=BOUND + NFT_ALLOWANCE + 2)
        assert guarded_outcome.finished_at is not None, "guarded client still hanging"
        assert_kernel_gave_up(guarded_outcome.error)
        detected_after = guarded_outcome.finished_at - fault_started
        print(f"idle: guarded redis-py failed {detected_after:.3f} s after the fault")
        assert detected_after <= BOUND + (fault_done - fault_started), detected_after
        # keepalive probes every second, give up 3 s after the last answer: never instantly
        assert detected_after >= TIMEOUT - 1.5, detected_after

        still_hanging_until = fault_started + BOUND + 0.5
        time.sleep(max(0.0, still_hanging_until - time.monotonic()))
        assert plain_thread.is_alive(), f"unguarded client ended: {plain_outcome.error!r}"
    finally:
        unblock(unguarded)
        unblock(guarded)
        guarded_thread.join(timeout=5)
        plain_thread.join(timeout=5)


def test_guarded_redis_client_with_a_command_in_flight_fails_within_timeout(
    redis_host: NetnsHost,
) -> None:
    """A command sent to a vanished server: TCP_USER_TIMEOUT bounds the unacknowledged data."""
    guarded, unguarded = client(redis_host, guarded=True), client(redis_host, guarded=False)
    assert guarded.ping() and unguarded.ping()  # connect (and guard) before the fault
    redis_host.blackhole()
    sent_at = time.monotonic()
    guarded_thread, guarded_outcome = in_thread(lambda: guarded.set("key", "value"))
    plain_thread, plain_outcome = in_thread(lambda: unguarded.set("key", "value"))
    try:
        guarded_thread.join(timeout=BOUND + 2)
        assert guarded_outcome.finished_at is not None, "guarded client still hanging"
        assert_kernel_gave_up(guarded_outcome.error)
        detected_after = guarded_outcome.finished_at - sent_at
        print(f"in flight: guarded redis-py failed {detected_after:.3f} s after the send")
        assert TIMEOUT - 0.2 <= detected_after <= BOUND, detected_after

        time.sleep(max(0.0, sent_at + BOUND + 0.5 - time.monotonic()))
        assert plain_thread.is_alive(), f"unguarded client ended: {plain_outcome.error!r}"
    finally:
        unblock(unguarded)
        unblock(guarded)
        guarded_thread.join(timeout=5)
        plain_thread.join(timeout=5)
