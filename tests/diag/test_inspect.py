"""``peerwatch inspect`` against connections this test put into known bad states.

The sockets are real (loopback, or a host in a network namespace blackholed by
nftables); inspect reads them back through netlink sock_diag and must find
each one, with its owner (this process) and the right verdict.
"""

from __future__ import annotations

import json
import os
import re
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


def table_rows(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, str]]:
    """The table as dicts (header -> cell); into a pipe it is unbounded, one line per row."""
    assert main(["inspect", *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    assert header[0] == "Verdict" and header[-1] == "Why", lines[0]
    rows = [dict(zip(header, re.split(r"\s{2,}", line.strip(), maxsplit=len(header) - 1),
                     strict=True)) for line in lines[1:-1]]  # fmt: skip
    assert re.match(r"\d+ connections?: ", lines[-1]), lines[-1]
    return rows


def ss_fields(*selector: str) -> str:
    """``ss -tni`` for the sockets of ``selector`` (an ss filter), its info line(s)."""
    out = subprocess.run(
        ["ss", "-Htni", *selector], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    return out


def test_columns_mean_what_ss_means(capsys: pytest.CaptureFixture[str], addr: str) -> None:
    client, server = pair(host=addr)
    with client, server:
        for _ in range(3):  # some round trips, so the kernel has an RTT to report
            client.sendall(b"x" * 100)
            server.recv(100)
            server.sendall(b"y" * 100)
            client.recv(100)
        here = "{}:{}".format(*client.getsockname())
        there = "{}:{}".format(*client.getpeername())
        (row,) = [r for r in table_rows(capsys, "--addr", addr) if r["Local"] == here]
        ss = ss_fields("src", here, "dst", there)
        rtt = re.search(r"\brtt:([\d.]+/[\d.]+)", ss)
        assert rtt and row["rtt"] == rtt[1], (row, ss)
        assert row["State"] == "ESTAB" and row["Peer"] == there
        assert (row["Recv-Q"], row["Send-Q"]) == ("0", "0")
        # no loss yet: ss prints no ssthresh (the kernel holds its "infinite" sentinel)
        assert not re.search(r"\bssthresh:", ss) and row["ssthresh"] == "-"
        assert "retrans:" not in ss and row["retrans"] == "-"
        (record,) = [r for r in inspect_json(capsys, "--addr", addr) if r["local"] == here]
        assert record["tcp_info"]["snd_ssthresh"] is None  # type: ignore[index]


def test_sort_pid_and_peer_filters(capsys: pytest.CaptureFixture[str], addr: str) -> None:
    first_client, first_server = pair(host=addr)
    second_client, second_server = pair(host=addr)
    with first_client, first_server, second_client, second_server:
        first = "{}:{}".format(*first_client.getpeername())
        rows = inspect_json(capsys, "--peer", first)
        assert [r["remote"] for r in rows] == [first]
        port = str(first_client.getpeername()[1])
        # with --addr: another test's connection elsewhere on 127/8 may use that port number
        by_port = inspect_json(capsys, "--addr", addr, "--peer", f":{port}")
        assert {r["remote"] for r in by_port} == {first}
        # by name: "localhost" resolves to 127.0.0.1 (and ::1), never to our private address
        assert inspect_json(capsys, "--peer", f"localhost:{port}") == []
        mine = inspect_json(capsys, "--addr", addr, "--pid", str(os.getpid()))
        assert len(mine) == 4
        assert inspect_json(capsys, "--addr", addr, "--pid", "1") == []
        # queues: the one with bytes waiting comes first
        second_client.sendall(b"z" * 1000)
        wait_for(lambda: info_of(second_server).bytes_received == 1000, what="bytes arrived")
        by_queue = table_rows(capsys, "--addr", addr, "--sort", "queues")
        assert by_queue[0]["Recv-Q"] == "1000" and by_queue[0]["Local"].startswith(addr)
        by_peer = inspect_json(capsys, "--addr", addr, "--sort", "peer")
        peers = [tuple(r["remote"].rsplit(":", 1)) for r in by_peer]  # type: ignore[union-attr]
        assert peers == sorted(peers, key=lambda p: (p[0], int(p[1])))


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
        # the table's retrans is ss's retrans:a/b (in flight now / over the connection's life),
        # read around ours, since a retransmission may fall between the two reads
        selector = ("dst", "{}:{}".format(*sock.getpeername()))
        before = re.search(r"\bretrans:(\d+/\d+)", ss_fields(*selector))
        (shown,) = table_rows(capsys, "--port", str(port), "--peer", netns_host.addr)
        after = re.search(r"\bretrans:(\d+/\d+)", ss_fields(*selector))
        assert before and after and shown["retrans"] in (before[1], after[1]), shown
        assert shown["timer"].startswith("on,"), shown  # ss -o's name for the retransmit timer

        states = {json.loads(line)["state"] for line in inside.stdout.splitlines()}
        locals_ = {json.loads(line)["local"] for line in inside.stdout.splitlines()}
        assert "LISTEN" in states
        assert all(local.startswith(netns_host.addr) for local in locals_ - {""}), locals_
        # close with an RST: no orphan left retransmitting to the vanished host after the test
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_a_process_name_cannot_write_to_the_terminal(
    capsys: pytest.CaptureFixture[str], addr: str
) -> None:
    """Any user names their process; inspect prints it to the operator's terminal."""
    listening = socket.socket()
    listening.bind((addr, 0))
    listening.listen(1)
    name = "x\x1b[2Jevil"  # comm keeps 15 bytes: the escape sequence fits
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import ctypes, socket, sys, time; libc = ctypes.CDLL(None);"
         f" libc.prctl(15, {name.encode()!r}, 0, 0, 0);"
         f" s = socket.create_connection(({addr!r}, {listening.getsockname()[1]}));"
         " print('up', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "up\n"
        (row,) = [r for r in table_rows(capsys, "--addr", addr, "--pid", str(child.pid))]
        assert row["Process"] == f"x?[2Jevil[{child.pid}]"
    finally:
        child.kill()
        child.wait()
        listening.close()
