"""``--json`` across commands, end to end: a server and a ping talking JSON lines on stdout."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.timeout(60)

PEERWATCH = [sys.executable, "-m", "peerwatch"]
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def parse(line: str) -> dict[str, object]:
    record = json.loads(line)
    assert list(record)[:2] == ["time", "event"], record
    assert RFC3339_UTC.match(record["time"]), record
    return record  # type: ignore[no-any-return]


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[str], dict[str, object]]]:
    proc = subprocess.Popen(
        [*PEERWATCH, "serve", "--json", "--port", "0", "--interval", "0.2", "--timeout", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        listening = parse(proc.stdout.readline())
        assert listening["event"] == "listening", listening
        yield proc, listening
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_serve_and_ping_speak_json_lines(
    server: tuple[subprocess.Popen[str], dict[str, object]],
) -> None:
    proc, listening = server
    assert listening["host"] == "127.0.0.1" and isinstance(listening["port"], int)
    ping = subprocess.run(
        [*PEERWATCH, "ping", "--json", "127.0.0.1", str(listening["port"]), "-i", "0.2",
         "-t", "1", "-c", "4"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert ping.returncode == 0, ping.stderr
    events = [parse(line) for line in ping.stdout.splitlines()]
    assert [e["event"] for e in events] == ["start", "tick", "tick", "tick", "tick", "summary"]
    summary = events[-1]
    assert summary["transmitted"] == summary["received"] and summary["loss_percent"] == 0.0
    rtt = summary["rtt_ms"]
    assert isinstance(rtt, dict) and 0 < rtt["min"] <= rtt["avg"] <= rtt["max"]
    assert events[-2]["replies"] == summary["received"]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert [parse(line)["event"] for line in out.splitlines()] == ["stopped"]
    assert proc.returncode == 0


def test_exporter_announces_its_address_as_a_json_line() -> None:
    """``exporter --json``: one ``listening`` line with where the metrics are served."""
    import socket

    proc = subprocess.Popen(
        [*PEERWATCH, "exporter", "--json", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        listening = parse(proc.stdout.readline())
        assert listening["event"] == "listening", listening
        assert listening["host"] == "127.0.0.1" and isinstance(listening["port"], int)
        url = listening["metrics"]
        assert url == f"http://127.0.0.1:{listening['port']}/metrics"
        # (a scrape reads every socket of the host: test_exporter.py scrapes in a netns)
        with socket.create_connection(("127.0.0.1", listening["port"]), timeout=10):
            pass  # it listens there
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
