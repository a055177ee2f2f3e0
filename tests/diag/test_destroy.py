"""``peerwatch inspect --destroy``: a program stuck on a blackholed peer is freed at once.

Two programs (child processes) each hold a connection to a Redis server in a
network namespace that the test then blackholes with nftables, and each is
blocked in ``recv`` after sending a request. Both connections are judged DEAD;
the filter selects one. The dry run changes nothing; ``--yes`` ends the selected
socket through sock_diag SOCK_DESTROY and its program gets ECONNABORTED within a
second, while the other program stays blocked on its intact connection.
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

from bad_states import wait_for
from diag_netns import NetnsHost
from peerwatch.assessment.model import AssessPolicy, Status
from peerwatch.cli import main
from peerwatch.diag.view import Filters, snapshot
from peerwatch.kernel.tcpinfo import TcpState

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sock_diag is Linux"),
]

REDIS_PORT = 6379


@pytest.fixture
def two_stuck(netns_host: NetnsHost) -> Iterator[tuple[Stuck, Stuck]]:
    with stuck_programs.two_stuck(netns_host, REDIS_PORT, "send") as both:
        yield both


#: the policy the commands below use: data unacknowledged for 0.5 s is DEAD
POLICY = AssessPolicy(dead_after=0.5)


def dead_ports(addr: str) -> set[int]:
    rows = snapshot(Filters(addresses=frozenset({addr})), POLICY)
    return {r.record.local[1] for r in rows if r.verdict.status is Status.DEAD}


def destroy(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    assert main(["inspect", "--destroy", "--json", "--dead-after", "0.5", *argv]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(list(line)[:2] == ["time", "event"] for line in lines)  # docs/JSON.md
    assert {line["event"] for line in lines} <= {"destroy"}
    return lines


def test_destroy_frees_the_selected_program_and_nothing_else(
    netns_host: NetnsHost, two_stuck: tuple[Stuck, Stuck], capsys: pytest.CaptureFixture[str]
) -> None:
    target, bystander = two_stuck
    wait_for(
        lambda: {target.port, bystander.port} <= dead_ports(netns_host.addr),
        timeout=10,
        what="both connections judged DEAD",
    )
    select = ["--addr", netns_host.addr, "--port", str(target.port)]

    # dry run: lists the selected one, ends nothing
    (planned,) = destroy(capsys, *select)
    assert planned["local"] == f"{netns_host.local_addr}:{target.port}"
    assert planned["destroy"] == {"ended": False, "note": "would end"}
    time.sleep(0.3)
    assert target.proc.poll() is None and bystander.proc.poll() is None

    started = time.monotonic()
    (done,) = destroy(capsys, *select, "--yes")
    assert done["destroy"] == {"ended": True, "note": "ended"}
    assert target.outcome(timeout=1.0) == "error ECONNABORTED"
    assert time.monotonic() - started < 1.0

    # the other program is still blocked on its connection, which the kernel still holds
    time.sleep(0.3)
    assert bystander.proc.poll() is None
    left = snapshot(Filters(addresses=frozenset({netns_host.addr})))
    assert [(r.record.local[1], r.record.state) for r in left] == [
        (bystander.port, TcpState.ESTABLISHED)
    ]


def test_destroy_without_net_admin_is_refused_and_ends_nothing(
    netns_host: NetnsHost, two_stuck: tuple[Stuck, Stuck]
) -> None:
    target, _ = two_stuck
    wait_for(lambda: target.port in dead_ports(netns_host.addr), timeout=10, what="DEAD")
    # root without CAP_NET_ADMIN in its bounding set: sock_diag still reads, SOCK_DESTROY not
    result = subprocess.run(
        ["setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin",
         sys.executable, "-m", "peerwatch", "inspect", "--destroy", "--yes",
         "--dead-after", "0.5", "--addr", netns_host.addr, "--port", str(target.port)],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines() == [
        "peerwatch inspect: the kernel refused SOCK_DESTROY: it needs CAP_NET_ADMIN "
        "(run as root, or grant the capability)"
    ]
    assert "Traceback" not in result.stderr
    time.sleep(0.3)
    assert target.proc.poll() is None


def test_yes_without_destroy_and_destroy_with_watch_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["inspect", "--yes"]) == 2
    assert main(["inspect", "--destroy", "--watch"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("peerwatch inspect: ") for line in err)
