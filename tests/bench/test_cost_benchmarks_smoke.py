"""The per-connection cost benchmarks still run and measure what they say: in
``heartbeat_cost`` every connection writes one PING and has one PONG timed per beat, and
none reaches a verdict; in ``eof_verdict_cost`` every FIN is one EOF verdict, its TCP_INFO
snapshot the kernel's at that moment."""

from __future__ import annotations

import subprocess
import sys

from bench.eof_verdict_cost import run as eof_run
from bench.heartbeat_cost import run

from peerwatch.core.verdicts import Cause


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


def test_each_eof_is_one_verdict_with_the_snapshot_of_its_moment() -> None:
    result = eof_run(40)
    assert result["verdicts"] == 40
    assert result["causes"] == [Cause.EOF.value]
    assert result["states"] == ["ESTABLISHED"]  # the moment of the FIN as told, decoded later
    assert 0 < result["seconds"] < 0.01
