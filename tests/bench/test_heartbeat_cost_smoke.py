"""The heartbeat-cost benchmark still runs and measures what it says: every connection
writes one PING and has one PONG timed per beat, and none reaches a verdict."""

from __future__ import annotations

import subprocess
import sys

from bench.heartbeat_cost import run


def test_each_beat_is_one_ping_and_one_timed_pong_per_connection() -> None:
    result = run(50, 3)
    assert result["pings"] == 50 * 3
    assert result["pongs"] == 50 * 3
    assert result["verdicts"] == 0
    assert 0 < result["seconds"] < 0.01  # per connection and heartbeat: well under 10 ms


def test_a_typo_in_the_arguments_is_a_usage_error_not_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.heartbeat_cost", "many"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "invalid int value" in done.stderr
