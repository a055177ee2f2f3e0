"""``peerwatch inspect --idle-limit S``: the budget audit, on real sockets with real options.

Each client socket below gets the options a real program might have; the
audit reads them back through a borrowed descriptor (this process owns them,
so pidfd_getfd is allowed) and must flag exactly what is wrong for a middlebox
that forgets flows idle for 350 s, with a fix that, applied, clears it. Where
the options cannot be read, the rules work from sock_diag's keepalive timer.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator

import pytest

from bad_states import pair, private_loopback
from peerwatch import guard
from peerwatch.assessment.budget import BudgetProblem, audit_budget, fix_timeout, min_user_timeout
from peerwatch.cli import main
from peerwatch.diag.view import Filters, snapshot
from peerwatch.kernel.knobs import TCP_USER_TIMEOUT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sock_diag is Linux")

LIMIT = 350.0


def keepalive(sock: socket.socket, idle: int, interval: int) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)


@pytest.fixture
def clients() -> Iterator[tuple[str, dict[str, socket.socket]]]:
    """Client sockets on a private loopback address, one per kind of protection."""
    addr = private_loopback()
    with contextlib.ExitStack() as stack:
        made: dict[str, socket.socket] = {}
        for name in ("bare", "late", "guarded", "twitchy", "timeout_only"):
            client, server = pair(host=addr)
            stack.enter_context(client)
            stack.enter_context(server)
            guard(server, 60)  # the server ends are not what is being audited
            made[name] = client
        keepalive(made["late"], 600, 60)
        guard(made["guarded"], 60)
        guard(made["twitchy"], 60)
        made["twitchy"].setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, 100)
        made["timeout_only"].setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, 5000)
        yield addr, made


def audit(capsys: pytest.CaptureFixture[str], addr: str) -> dict[str, dict[str, object]]:
    assert main(["inspect", "--json", "--idle-limit", str(LIMIT), "--addr", addr]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(list(row)[:2] == ["time", "event"] and row["event"] == "audit" for row in rows)
    assert len({row["time"] for row in rows}) <= 1  # one snapshot, one time
    return {str(row["local"]): row["budget"] for row in rows}


def local(sock: socket.socket) -> str:
    return "{}:{}".format(*sock.getsockname())


def problems(budget: dict[str, object]) -> list[str]:
    findings = budget["findings"]
    assert isinstance(findings, list)
    return [f["problem"] for f in findings]


def test_each_weakness_is_flagged_with_its_fix(
    clients: tuple[str, dict[str, socket.socket]], capsys: pytest.CaptureFixture[str]
) -> None:
    addr, made = clients
    budgets = audit(capsys, addr)
    assert len(budgets) == 2 * len(made)
    for name, sock in made.items():
        assert budgets[local(sock)]["settings"] == "socket options", name
    assert problems(budgets[local(made["bare"])]) == ["NO_PROTECTION"]
    # what was applied to each connection, read from the socket (inspect --pid shows it too)
    late_applied = budgets[local(made["late"])]["applied"]
    assert isinstance(late_applied, dict)
    assert (late_applied["keepalive"], late_applied["idle"], late_applied["interval"]) == (
        True,
        600,
        60,
    )
    twitchy_applied = budgets[local(made["twitchy"])]["applied"]
    assert isinstance(twitchy_applied, dict) and twitchy_applied["user_timeout_ms"] == 100
    bare_applied = budgets[local(made["bare"])]["applied"]
    assert isinstance(bare_applied, dict) and bare_applied["keepalive"] is False
    assert problems(budgets[local(made["late"])]) == ["KEEPALIVE_TOO_LATE"]
    assert problems(budgets[local(made["guarded"])]) == []
    assert problems(budgets[local(made["twitchy"])]) == ["USER_TIMEOUT_TOO_SHORT"]
    assert problems(budgets[local(made["timeout_only"])]) == ["NO_KEEPALIVE"]
    (late,) = budgets[local(made["late"])]["findings"]  # type: ignore[misc]
    assert "first probe comes after 10 min idle" in late["detail"]
    port = made["late"].getsockname()[1]
    assert late["fix"].startswith(
        f"peerwatch guard --pid {os.getpid()} --port {port} --timeout 350"
    )
    (twitchy,) = budgets[local(made["twitchy"])]["findings"]  # type: ignore[misc]
    assert twitchy["fix"].startswith("raise TCP_USER_TIMEOUT to at least 1")

    # the fix, applied, clears every finding
    for name in ("bare", "late", "timeout_only", "twitchy"):
        guard(made[name], fix_timeout(LIMIT))
    after = audit(capsys, addr)
    assert all(problems(after[local(sock)]) == [] for sock in made.values())

    assert main(["inspect", "--idle-limit", str(LIMIT), "--addr", addr]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "idle limit 350 s: 0 of 10 established connections at risk"
    )


def test_without_the_options_the_keepalive_timer_speaks(
    clients: tuple[str, dict[str, socket.socket]],
) -> None:
    """What sock_diag alone shows (a process we may not borrow from): timer on or off."""
    addr, made = clients
    rows = {row.record.local_text: row for row in snapshot(Filters(addresses=frozenset({addr})))}
    found = {
        name: [f.problem for f in audit_budget(rows[local(sock)].record.facts(), LIMIT, "fix")]
        for name, sock in made.items()
    }
    assert found["bare"] == [BudgetProblem.NO_PROTECTION]
    assert found["late"] == [BudgetProblem.KEEPALIVE_TOO_LATE]  # next probe ~600 s away
    assert found["guarded"] == []
    # the user timeout is invisible to sock_diag: not flagged, never guessed
    assert found["twitchy"] == [] and found["timeout_only"] == [BudgetProblem.NO_PROTECTION]


def test_user_timeout_floor_follows_the_rto(
    clients: tuple[str, dict[str, socket.socket]],
) -> None:
    addr, made = clients
    (row,) = [
        r
        for r in snapshot(Filters(addresses=frozenset({addr})))
        if r.record.local_text == local(made["bare"])
    ]
    info = row.record.info
    assert info is not None
    # 3 retransmissions: RTO, 2 RTO, 4 RTO, never less than the kernel's 200 ms floor each
    assert min_user_timeout(row.record.facts()) == pytest.approx(
        7 * max(0.2, info.rto_us / 1e6 / (1 << info.backoff))
    )
