"""``peerwatch run`` on unchanged programs whose server host loses power with a request in flight.

The servers run in a network namespace this test creates (``netns_host``), at a
non-loopback address, so protection applies with its defaults. The fault is an
nftables rule there that drops every packet: the host vanishes without FIN or
RST. The same program runs twice side by side, under ``peerwatch run --timeout
3`` and unprotected: the protected one must get a driver error within the
budget (+10 %), the unprotected one must still be waiting at that moment
(redis-py 8's own ``socket_timeout`` would end it after 5 s; libpq has none, and
the kernel alone gives up after ``tcp_retries2``, about 15 minutes).
"""

from __future__ import annotations

import contextlib
import select
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from diag_netns import NetnsHost

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]

TIMEOUT = 3.0
BOUND = TIMEOUT * 1.1
NFT_ALLOWANCE = 0.25

REDIS_CLIENT = r"""
import sys, time
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
r = redis.Redis(host=sys.argv[1], port=6379, retry=Retry(NoBackoff(), 0))
r.ping()
print("ready", flush=True)
sys.stdin.readline()
started = time.monotonic()
try:
    r.set("key", "value")
    print("ok", time.monotonic() - started, flush=True)
except Exception as exc:
    print("error", type(exc).__name__, time.monotonic() - started, flush=True)
"""


PSYCOPG_CLIENT = r"""
import sys, time
import psycopg
conn = psycopg.connect(host=sys.argv[1], port=5432, user="postgres", dbname="postgres",
                       autocommit=True)
conn.execute("SELECT 1")
print("ready", flush=True)
sys.stdin.readline()
started = time.monotonic()
try:
    conn.execute("SELECT 1")
    print("ok", time.monotonic() - started, flush=True)
except Exception as exc:
    print("error", type(exc).__name__, time.monotonic() - started, flush=True)
"""


def program(code: str, addr: str, *, protected: bool) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", code, addr]
    if protected:
        argv = [sys.executable, "-m", "peerwatch", "run", "--timeout", str(TIMEOUT), "--", *argv]
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def clients() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)


def line_from(proc: subprocess.Popen[str], timeout: float) -> str:
    """The program's next line, or "" if it said nothing within ``timeout`` seconds."""
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if readable else ""


def ready(proc: subprocess.Popen[str]) -> None:
    line = line_from(proc, 30)
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")


def power_off_in_flight(
    host: NetnsHost, protected: subprocess.Popen[str], plain: subprocess.Popen[str]
) -> list[str]:
    """Cut the host, send the request from both programs; the protected one's outcome."""
    ready(protected)
    ready(plain)
    started = time.monotonic()
    host.blackhole()
    assert time.monotonic() - started < NFT_ALLOWANCE
    for proc in (protected, plain):  # the request goes out now, to a host that is gone
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outcome = line_from(protected, BOUND + 2).split()
    time.sleep(max(0.0, started + BOUND + 0.5 - time.monotonic()))
    assert plain.poll() is None, "the unprotected program should still be waiting"
    return outcome


def test_run_turns_a_powered_off_redis_host_into_an_error_within_the_budget(
    netns_host: NetnsHost, clients: list[subprocess.Popen[str]]
) -> None:
    pytest.importorskip("redis")
    netns_host.start_redis()
    protected = program(REDIS_CLIENT, netns_host.addr, protected=True)
    plain = program(REDIS_CLIENT, netns_host.addr, protected=False)
    clients += [protected, plain]
    outcome = power_off_in_flight(netns_host, protected, plain)
    assert outcome[:1] == ["error"], outcome
    assert outcome[1] in ("ConnectionError", "TimeoutError"), outcome
    elapsed = float(outcome[2])
    print(f"protected redis-py: {outcome[1]} after {elapsed:.3f} s")
    assert TIMEOUT - 0.2 <= elapsed <= BOUND, elapsed


@pytest.mark.slow  # initdb and a PostgreSQL start: several seconds
def test_run_turns_a_powered_off_postgres_host_into_an_error_through_libpq_options(
    netns_host: NetnsHost, clients: list[subprocess.Popen[str]]
) -> None:
    pytest.importorskip("psycopg")
    from peerwatch.testing.servers import ServerUnavailable, Where, start_postgres

    def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
        return netns_host.spawn(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    try:
        server = start_postgres(Where(netns_host.addr, 5432, spawn=spawn))
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        protected = program(PSYCOPG_CLIENT, netns_host.addr, protected=True)
        plain = program(PSYCOPG_CLIENT, netns_host.addr, protected=False)
        clients += [protected, plain]
        outcome = power_off_in_flight(netns_host, protected, plain)
        assert outcome[:1] == ["error"], outcome
        assert outcome[1] in ("OperationalError", "ConnectionTimeout"), outcome
        elapsed = float(outcome[2])
        print(f"protected psycopg: {outcome[1]} after {elapsed:.3f} s")
        assert TIMEOUT - 0.2 <= elapsed <= BOUND, elapsed
    finally:
        for proc in clients:  # before the server: its connections go with them
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        server.stop()
