"""``peerwatch inspect`` against connections this test put into known bad states.

The sockets are real (loopback, or a host in a network namespace blackholed by
nftables); inspect reads them back through netlink sock_diag and must find
each one, with its owner (this process) and the right verdict.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bad_states import (
    close_wait_pair,
    info_of,
    pair,
    private_loopback,
    wait_for,
    zero_window_pair,
)
from diag_netns import NetnsHost

from peerwatch.cli import main

pytest.importorskip("rich")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sock_diag is Linux")


@pytest.fixture
def addr() -> str:
    """This test's own loopback address: its connections, and no one else's, match it."""
    return private_loopback()


def inspect_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    assert main(["inspect", "--json", *argv]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def port_of(sock: socket.socket) -> str:
    return str(sock.getsockname()[1])


def row_for(rows: list[dict[str, object]], sock: socket.socket) -> dict[str, object]:
    local, remote = "{}:{}".format(*sock.getsockname()), "{}:{}".format(*sock.getpeername())
    matches = [r for r in rows if r["local"] == local and r["remote"] == remote]
    assert len(matches) == 1, rows
    return matches[0]


def verdict(row: dict[str, object]) -> tuple[object, object]:
    v = row["verdict"]
    assert isinstance(v, dict)
    return v["status"], v["cause"]


def test_close_wait_kept_open_is_found_with_its_owner(
    capsys: pytest.CaptureFixture[str], addr: str
) -> None:
    client, _ = close_wait_pair(addr)
    with client:
        rows = inspect_json(capsys, "--addr", addr)
        row = row_for(rows, client)
        assert row["state"] == "CLOSE_WAIT"
        assert verdict(row) == ("SUSPECT", "PEER_CLOSED")
        command = Path("/proc/self/comm").read_text().strip()
        assert row["process"] == [{"pid": os.getpid(), "command": command}]
        # the same socket, judged stricter: the threshold is a command-line option
        rows = inspect_json(capsys, "--addr", addr, "--close-wait-after", "0")
        assert verdict(row_for(rows, client)) == ("DEAD", "PEER_CLOSED")


def test_zero_window_both_ends(capsys: pytest.CaptureFixture[str], addr: str) -> None:
    client, server = zero_window_pair(addr)
    with client, server:
        rows = inspect_json(capsys, "--addr", addr, "--port", port_of(server))
        writer, reader = row_for(rows, client), row_for(rows, server)
        assert verdict(writer) == ("SUSPECT", "PEER_NOT_READING")
        assert writer["timer"] in ("zero-window-probe", "retransmit")
        assert isinstance(writer["send_queue"], int) and writer["send_queue"] > 0
        assert verdict(reader) == ("SUSPECT", "LOCAL_NOT_READING")
        assert reader["recv_queue"] == 4096


def test_filters_by_state_verdict_process_and_listeners(
    capsys: pytest.CaptureFixture[str], addr: str
) -> None:
    healthy_client, healthy_server = pair(host=addr)
    stuck, _ = close_wait_pair(addr)
    with healthy_client, healthy_server, stuck:
        ports = ["--addr", addr, "--port", port_of(healthy_server), "--port", port_of(stuck)]
        everything = inspect_json(capsys, *ports)
        # two ends of the healthy pair, the CLOSE_WAIT, and its closed peer's orphan
        assert sorted(r["state"] for r in everything) == [
            "CLOSE_WAIT", "ESTABLISHED", "ESTABLISHED", "FIN_WAIT2"
        ]  # fmt: skip
        only_problems = inspect_json(capsys, *ports, "--problems")
        assert [r["state"] for r in only_problems] == ["CLOSE_WAIT"]
        only_alive = inspect_json(capsys, *ports, "--verdict", "alive")
        assert sorted(r["state"] for r in only_alive) == ["ESTABLISHED", "ESTABLISHED", "FIN_WAIT2"]
        by_state = inspect_json(capsys, *ports, "--state", "close-wait")
        assert len(by_state) == 1
        by_port = inspect_json(capsys, "--port", port_of(healthy_server), "--port", port_of(stuck))
        assert {r["local"] for r in everything} <= {r["local"] for r in by_port}
        assert inspect_json(capsys, "--addr", "127.0.0.0", *ports[2:]) == []
        mine = inspect_json(capsys, *ports, "--process", str(os.getpid()))
        assert len(mine) == 3  # the orphan belongs to no process
        assert inspect_json(capsys, *ports, "--process", "no-such-command") == []
        with socket.socket() as listening:
            listening.bind((addr, 0))
            listening.listen(3)
            assert inspect_json(capsys, "--addr", addr, "--port", port_of(listening)) == []
            (row,) = inspect_json(capsys, "--addr", addr, "--port", port_of(listening), "--all")
            assert row["state"] == "LISTEN"
            assert verdict(row) == ("ALIVE", "LISTENING")
            assert row["send_queue"] == 3  # the backlog


def test_worst_first_table_and_watch(capsys: pytest.CaptureFixture[str], addr: str) -> None:
    healthy_client, healthy_server = pair(host=addr)
    stuck, _ = close_wait_pair(addr)
    with healthy_client, healthy_server, stuck:
        ports = ["--addr", addr]
        assert main(["inspect", *ports]) == 0
        table = capsys.readouterr().out
        assert table.index("SUSPECT") < table.index("ALIVE")
        assert "CLOSE_WAIT" in table and "4 connections: 3 ALIVE, 1 SUSPECT, 0 DEAD" in table
        started = time.monotonic()
        assert main(["inspect", *ports, "--watch", "--count", "2", "--interval", "0.1"]) == 0
        assert time.monotonic() - started < 5
        assert capsys.readouterr().out.count("PEER_CLOSED") >= 1
        lines = inspect_json(capsys, *ports, "--watch", "--count", "2", "--interval", "0.1")
        snapshots = sorted({line["time"] for line in lines})  # type: ignore[type-var]
        assert len(snapshots) == 2 and len(lines) == 2 * 4


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--state", "HALF_DEAD"]) == 2
    assert "unknown state" in capsys.readouterr().err
    assert main(["inspect", "--dead-after", "-1"]) == 2


@pytest.mark.netns
def test_blackholed_peer_with_data_in_flight_is_dead(
    netns_host: NetnsHost, capsys: pytest.CaptureFixture[str]
) -> None:
    """The peer host vanishes (nftables drop) while we send: retransmissions go unanswered."""
    port = 6379
    netns_host.start_redis(port)
    sock = socket.create_connection((netns_host.addr, port), timeout=5)
    with sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(100) == b"+PONG\r\n"
        netns_host.blackhole()
        sock.sendall(b"PING\r\n")
        wait_for(lambda: info_of(sock).retransmits >= 3, timeout=8, what="3 retransmissions")
        rows = inspect_json(capsys, "--port", str(port), "--dead-after", "1")
        row = row_for(rows, sock)
        assert row["timer"] == "retransmit"
        assert isinstance(row["timer_retrans"], int) and row["timer_retrans"] >= 3
        assert verdict(row) == ("DEAD", "NOT_ACKNOWLEDGING")
        detail = row["verdict"]["detail"]  # type: ignore[index]
        assert "peer not acknowledging for" in detail and "retransmissions" in detail

        # inside the namespace, inspect sees that namespace's sockets and no others
        inside = subprocess.run(
            ["ip", "netns", "exec", netns_host.name, sys.executable, "-m", "peerwatch",
             "inspect", "--json", "--all"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
        states = {json.loads(line)["state"] for line in inside.stdout.splitlines()}
        locals_ = {json.loads(line)["local"] for line in inside.stdout.splitlines()}
        assert "LISTEN" in states
        assert all(local.startswith(netns_host.addr) for local in locals_ - {""}), locals_
        # close with an RST: no orphan left retransmitting to the vanished host after the test
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
