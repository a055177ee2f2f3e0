"""The detection benchmark still runs: 5 frozen and 5 killed peers, end to end, in seconds.

Latencies are not checked (the CI machine is shared); verdicts are: every frozen
peer is declared hung or silent and every killed one gone (EOF or RESET), which is
what the full benchmark's numbers stand on. The benchmark once waited 120 s for a
flock of peers that had all exited at start-up (a forked peer took the benchmark,
not the flock, for its parent); the subprocess timeout here is far below that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.detection import EXPECTED

ROOT = Path(__file__).resolve().parents[2]


def test_quick_detection_gives_every_peer_its_verdict(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "detection", "--out", str(tmp_path)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((tmp_path / "detection.json").read_text())
    assert result["failed"] == {}, result["failed"]
    (row,) = result["rows"]
    for action, expected in EXPECTED.items():
        causes = row["causes"][action]
        assert set(causes) <= set(expected), causes
        assert sum(causes.values()) == row["peers"]
    assert row["frozen_internal_ms"]["n"] == row["peers"]
    assert row["killed_ms"]["n"] == row["peers"]
    assert "Detection" in (tmp_path / "BENCHMARKS.md").read_text()
