"""The resume benchmark still runs: a quick pass, end to end, in about ten seconds.

Numbers are not checked against the targets (the CI machine is shared and
small); what is checked is what the full run relies on: every setup ran and
every message was taken by the server application, the outage really cut the
connection and the client replayed exactly the messages it had enqueued, and
the report was written from the results.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_quick_resume_benchmark_runs_and_reports(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "resume", "--out", str(tmp_path)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((tmp_path / "resume.json").read_text())
    assert result["failed"] == {}
    setups = {row["setup"] for row in result["throughput"]["rows"]}
    assert setups == {"plain", "resumable, in-process store", "resumable, Redis store"}
    for row in result["throughput"]["rows"]:
        assert all(measured["messages"] > 0 for measured in row["runs"])
    for row in result["cost"]["rows"]:
        for measured in row["runs"]:
            assert measured["replayed"] == measured["taken"] == row["replays"]
            assert measured["resume_ms"] > 0 and measured["fresh_ms"] > 0
    delayed = next(row for row in result["cost"]["rows"] if row["delay_ms"] == 10.0)
    assert delayed["rtt_ms"]["min"] >= 20.0  # the relay's delay is really on the path
    assert delayed["resume_ms"]["min"] >= 20.0  # a resume cannot beat one round trip
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Resumable sessions" in report
    assert "| resumable, in-process store | 100 B |" in report
