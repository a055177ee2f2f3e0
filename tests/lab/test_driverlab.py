"""`peerwatch lab --drivers`: real PostgreSQL and Redis, real psycopg and redis-py, real faults.

The CI subset of the driver scenarios (about 45 s): the host loses power with a
request in flight, and a NAT forgets an idle flow. Unprotected drivers must
still be waiting at the bound; guarded ones must end the request with a clear
error within the budget + 10 %, and keep the flow through the NAT.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peerwatch.lab.netns import PREFIX, can_create_namespaces, lab_namespaces, namespace_pids

REPO = Path(__file__).resolve().parents[2]


def _lab(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "peerwatch", "lab", "--drivers", *args]
    return subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def _server_dirs() -> set[str]:
    return {p.name for p in Path("/tmp").glob("pwlab-drivers-*")}


@pytest.mark.netns
@pytest.mark.slow
def test_quick_driver_run_guard_ends_the_hang_and_keeps_the_flow(tmp_path: Path) -> None:
    able, why = can_create_namespaces()
    if not able:
        pytest.skip(f"needs root: {why}")
    namespaces, dirs = set(lab_namespaces()), _server_dirs()
    out, table = tmp_path / "drivers.json", tmp_path / "drivers.md"
    result = _lab(
        "--quick",
        "--scenario",
        "power-off-inflight,middlebox",
        "--json",
        "--save",
        str(out),
        "--markdown",
        str(table),
        timeout=240,
    )
    assert result.returncode == 0, (result.stdout[-4000:], result.stderr[-2000:])
    report = json.loads(out.read_text())
    lines = [json.loads(line) for line in result.stdout.splitlines()]  # stdout: JSON lines only
    assert [line["event"] for line in lines] == ["record"] * len(report["records"]) + ["summary"]
    bound = report["settings"]["bound"]
    claimed = report["settings"]["timeout"] * 1.1
    records = {(r["fault"], r["server"], r["protection"]): r for r in report["records"]}
    assert len(records) == 2 * 2 * 2
    for server in ("postgresql", "redis"):
        hung = records[("power-off-inflight", server, "defaults")]
        assert hung["outcome"] == "never", hung
        assert hung["saw"] == f"still waiting at {bound:g} s", hung
        guarded = records[("power-off-inflight", server, "guard")]
        assert guarded["outcome"] == "error", guarded
        assert 0 < guarded["seconds"] <= claimed, guarded
        assert "time" in guarded["saw"].lower(), guarded  # ETIMEDOUT, as the driver words it
        forgotten = records[("middlebox", server, "defaults")]
        assert forgotten["outcome"] == "never", forgotten
        dropped = int(forgotten["saw"].split("dropped ")[1].split()[0])
        assert dropped > 0, forgotten  # the NAT really dropped the forgotten flow's packets
        kept = records[("middlebox", server, "guard")]
        assert kept["outcome"] == "reply", kept
    assert "| power-off-inflight | postgresql (psycopg) | never ✓ | error" in table.read_text()
    socket_options = records[("power-off-inflight", "postgresql", "guard")]["socket"]
    assert socket_options.startswith("keepalive 2+"), socket_options
    leaked = [
        n
        for n in set(lab_namespaces()) - namespaces
        if not Path(f"/proc/{n[len(PREFIX) :].split('-', 1)[0]}").exists()
    ]
    assert leaked == []
    assert _server_dirs() - dirs == set()


def test_unknown_fault_is_a_one_line_usage_error() -> None:
    result = _lab("--scenario", "power-of-inflight", timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "peerwatch lab: unknown name(s): power-of-inflight; see --drivers --list"
    )
    assert "Traceback" not in result.stderr


def test_list_names_every_fault_server_and_protection() -> None:
    result = _lab("--list", timeout=60)
    assert result.returncode == 0, result.stderr
    for name in ("power-off-inflight", "middlebox", "server-idle-close", "hung"):
        assert name in result.stdout
    for server in ("postgresql (psycopg)", "redis (redis-py)", "nginx", "rabbitmq", "nats"):
        assert server in result.stdout
    assert "protections: defaults, driver, guard, run" in result.stdout


def test_without_root_the_driver_scenarios_refuse_in_one_line() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to become nobody) and setpriv")
    nobody = 65534
    argv = [sys.executable, "-m", "peerwatch", "lab", "--drivers", "--quick"]
    result = subprocess.run(
        ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", *argv],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "need real root" in lines[0]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _processes_mentioning(text: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.netns
def test_sigterm_mid_run_stops_servers_and_clients_and_removes_everything() -> None:
    able, why = can_create_namespaces()
    if not able:
        pytest.skip(f"needs root: {why}")
    dirs = _server_dirs()
    argv = [sys.executable, "-m", "peerwatch", "lab", "--drivers", "--quick", "--server", "redis"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        mine = f"{PREFIX}{proc.pid}-"
        clients = f'"parent": {proc.pid}'.encode()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _processes_mentioning(clients):
            time.sleep(0.2)  # wait until the servers run and the clients connect
        assert _processes_mentioning(clients), "the clients never started"
        assert [n for n in lab_namespaces() if n.startswith(mine)]
        servers = [p for n in lab_namespaces() if n.startswith(mine) for p in namespace_pids(n)]
        names = {_comm(p) for p in servers}
        assert "redis-server" in names, names
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert b"Traceback" not in stderr
    assert [n for n in lab_namespaces() if n.startswith(mine)] == []
    assert _processes_mentioning(clients) == []
    assert [p for p in servers if Path(f"/proc/{p}").exists()] == []
    assert _server_dirs() - dirs == set()
