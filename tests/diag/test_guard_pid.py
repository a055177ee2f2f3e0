"""``peerwatch guard --pid``: a running program's unprotected connection, protected from outside.

A child process holds an idle connection (no keepalive, no user timeout) to a
Redis server in a network namespace and is blocked in recv, as a driver
waiting for a reply. The host is blackholed: left alone, the program would
wait forever. ``guard --pid`` sets keepalive and TCP_USER_TIMEOUT on its socket
through pidfd_getfd, and the program's recv fails with ETIMEDOUT within the
bound guard reported. Filters are honoured, and without ptrace access the
command refuses and changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import stuck_programs
from stuck_programs import Stuck

from diag_netns import NetnsHost
from peerwatch.assessment.model import Timer
from peerwatch.cli import main
from peerwatch.diag.view import Filters, snapshot

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfd is Linux"),
]

REDIS_PORT = 6379


@pytest.fixture
def idle_stuck(netns_host: NetnsHost) -> Iterator[tuple[Stuck, Stuck]]:
    with stuck_programs.two_stuck(netns_host, REDIS_PORT, "idle") as both:
        yield both


def timer_of(addr: str, port: int) -> Timer | None:
    """The socket's kernel timer, or None once the socket is gone."""
    rows = [r for r in snapshot(Filters(addresses=frozenset({addr}))) if r.record.local[1] == port]
    assert len(rows) <= 1, rows
    return rows[0].record.timer if rows else None


def guard_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    """The ``socket`` lines of ``guard --json``, after checking the closing ``summary``."""
    assert main(["guard", "--json", *argv]) == 0
    *sockets, summary = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert summary["event"] == "summary" and summary["sockets"] == len(sockets)
    assert {line["event"] for line in sockets} <= {"socket"}
    return sockets


def test_guarded_program_fails_within_its_new_bound(
    netns_host: NetnsHost,
    idle_stuck: tuple[Stuck, Stuck],
    capsys: pytest.CaptureFixture[str],
) -> None:
    target, bystander = idle_stuck
    assert timer_of(netns_host.addr, target.port) is Timer.NONE  # no keepalive: unprotected

    # a filter that selects none of its sockets changes nothing, nor does a dry run
    assert guard_json(capsys, "--pid", str(target.pid), "--port", "1") == []
    (listed,) = guard_json(capsys, "--pid", str(target.pid), "--dry-run")
    assert listed["guard"] is None and listed["remote"] == f"{netns_host.addr}:{REDIS_PORT}"
    assert timer_of(netns_host.addr, target.port) is Timer.NONE

    started = time.monotonic()
    (guarded,) = guard_json(capsys, "--pid", str(target.pid), "--timeout", "3")
    assert guarded["pid"] == target.pid and guarded["state"] == "ESTABLISHED"
    assert guarded["local"] == f"{netns_host.local_addr}:{target.port}"
    result = guarded["guard"]
    assert isinstance(result, dict)
    assert set(result["options"].values()) == {"set"}
    idle_bound = result["idle_bound"]
    assert isinstance(idle_bound, float) and 2 <= idle_bound <= 3
    # keepalive runs now; on a loaded machine the socket may already have ended through it
    # (its idle time counts from before the guard), which the outcome below must then show
    assert timer_of(netns_host.addr, target.port) in (Timer.KEEPALIVE, None)

    # counted from the last segment heard (before the guard), so at most the bound from now
    assert target.outcome(timeout=idle_bound + 2) == "error ETIMEDOUT"
    elapsed = time.monotonic() - started
    assert elapsed <= idle_bound + 1.0, elapsed
    # the other program was not guarded: still blocked, its socket still without keepalive
    assert bystander.proc.poll() is None
    assert timer_of(netns_host.addr, bystander.port) is Timer.NONE


def test_guard_without_ptrace_access_is_refused(
    netns_host: NetnsHost, idle_stuck: tuple[Stuck, Stuck]
) -> None:
    target, _ = idle_stuck
    result = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
         sys.executable, "-m", "peerwatch", "guard", "--pid", str(target.pid)],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1, result
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        f"peerwatch guard: not allowed to see the descriptors of process {target.pid}"
    )
    assert "ptrace" in line
    assert timer_of(netns_host.addr, target.port) is Timer.NONE


def test_guard_of_a_process_that_is_gone(capsys: pytest.CaptureFixture[str]) -> None:
    """(Bad command lines are in tests/cli/test_convention.py with every other command's.)"""
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        gone.wait()
    assert main(["guard", "--pid", str(gone.pid)]) == 1
    assert capsys.readouterr().err == f"peerwatch guard: no process with pid {gone.pid}\n"
