"""The benchmark suite still runs: a quick throughput pass, end to end, in a few seconds.

Numbers are not checked (the CI machine is shared and small); what is checked is
that every setup ran, every message sent was consumed by the server application,
and the report was written from the results.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_throughput_runs_and_reports(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "throughput", "--out", str(tmp_path)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((tmp_path / "throughput.json").read_text())
    assert result["failed"] == {}
    setups = {(row["setup"], row["size"]) for row in result["rows"]}
    for label in ("bare floor", "websockets", "peerwatch fire-and-forget"):
        for size in (100, 1024 * 1024):
            assert (label, size) in setups
    for row in result["rows"]:
        for measured in row["runs"]:
            assert measured["messages"] > 0
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| peerwatch acknowledged | 100 B |" in report
    assert (tmp_path / "benchmarks.png").stat().st_size > 0
