"""``peerwatch ping``: a line per interval while the peer lives, the verdict when it dies."""

from __future__ import annotations

import os
import re
import signal
import socket
import time

import pytest

pytestmark = pytest.mark.timeout(60)

LINE = re.compile(
    r"^127\.0\.0\.1:\d+: seq=(\d+) state=(alive|quiet|suspect) rtt=(n/a|[\d.]+ ms)"
    r" heard [\d.]+ s ago, pings (\d+) sent / (\d+) replies$"
)


@pytest.fixture
def served(serve):
    return serve("--workers", "1", "--interval", "0.5", "--timeout", "2")


def test_count_prints_one_line_per_interval_and_exits_zero(served, pinger):
    ping = pinger("127.0.0.1", str(served.port), "-i", "0.2", "-t", "1", "-c", "4")
    assert ping.wait(20) == 0
    assert ping.out[0].startswith(f"PEERWATCH PING 127.0.0.1:{served.port}: interval 0.2 s")
    ticks = [LINE.match(line) for line in ping.out[1:5]]
    assert all(ticks), ping.out
    assert [int(m[1]) for m in ticks] == [1, 2, 3, 4]
    assert all(m[2] == "alive" for m in ticks[1:]), ping.out
    assert any(m[3].endswith(" ms") for m in ticks)  # a reply's RTT was measured
    # ping(8)'s count: replies to our pings, none lost on loopback
    assert int(ticks[-1][4]) >= 2 and int(ticks[-1][5]) >= int(ticks[-1][4]) - 1
    summary = re.search(r"(\d+) pings transmitted, (\d+) received, 0% loss", "\n".join(ping.out))
    assert summary and int(summary[1]) >= 2 and summary[1] == summary[2], ping.out
    assert ping.out[-2].startswith("rtt min/avg/max = ") and ping.out[-2].endswith(" ms")
    assert "peer alive" in ping.out[-1]


def test_frozen_server_gives_a_hung_verdict_and_exit_one(served, pinger):
    ping = pinger("127.0.0.1", str(served.port), "-i", "0.2", "-t", "1")
    ping.wait_for(r"seq=2 state=alive")
    worker = served.pids[0]
    os.kill(worker, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        verdict = ping.wait_for(r"verdict (\w+): .*\(peer silent for ([\d.]+) s\)", timeout=10)
        took = time.monotonic() - frozen_at
        assert ping.wait(10) == 1
    finally:
        os.kill(worker, signal.SIGCONT)
    assert verdict[1] == "HUNG"  # the worker's kernel still acknowledges, its loop does not
    assert 1.0 <= float(verdict[2]) < 1.3
    assert took < 1.0 + 1.0  # timeout + a generous margin for two processes to report
    assert any(LINE.match(line) and "state=suspect" in line for line in ping.out), ping.out
    assert "verdict HUNG" in ping.out[-1]


def test_killed_server_gives_an_eof_or_reset_verdict_at_once(served, pinger):
    ping = pinger("127.0.0.1", str(served.port), "-i", "0.2", "-t", "1")
    ping.wait_for(r"seq=1 ")
    os.kill(served.pids[0], signal.SIGKILL)
    killed_at = time.monotonic()
    verdict = ping.wait_for(r"verdict (\w+): ", timeout=10)
    took = time.monotonic() - killed_at
    assert ping.wait(10) == 1
    assert verdict[1] in ("EOF", "RESET")
    assert took < 0.5  # the kernel closed the dead process's socket: no timeout needed


def test_nobody_listening_exits_two_with_the_reason(pinger):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        ping = pinger("127.0.0.1", str(port), "-c", "1")
        assert ping.wait(20) == 2
    assert "RESET" in ping.out[0] and "ECONNREFUSED" in ping.out[0], ping.out


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_serve_and_ping_over_ipv6(serve, pinger):
    served = serve("--host", "::1")
    assert served.host == "[::1]"
    ping = pinger("::1", str(served.port), "-i", "0.2", "-c", "2")
    assert ping.wait(20) == 0
    assert ping.out[1].startswith(f"[::1]:{served.port}: seq=1 state=alive")
