"""The scale benchmark's set-up still works, at a size CI can afford.

2,000 connections over 3 loopback source addresses, held by peerwatch and by
the floor with 1 s heartbeats in two consecutive runs, then 100 peers frozen and
100 killed at once.
Numbers are not checked against the targets (CI machines are small and
shared); what is checked is what the full run relies on: every connection was
opened and held, the heartbeats flowed, every victim got the verdict its fate
calls for, and no other connection got one.
"""

from __future__ import annotations

from typing import Any

import pytest
from bench.scale import BATCHED, QUICK, load_shares, run_scale
from bench.scale_report import scale_checks, scale_section

pytestmark = pytest.mark.slow


def test_connections_are_spread_over_several_source_addresses() -> None:
    shares = load_shares(100_000)
    assert sum(share for share, _ in shares) == 100_000
    per_source: dict[str, int] = {}
    for share, sources in shares:
        for index, source in enumerate(sources):
            per_source[source] = per_source.get(source, 0) + len(range(index, share, len(sources)))
    assert len(per_source) >= 5
    assert max(per_source.values()) <= 28_000  # each source's ephemeral port range suffices
    assert all(source.startswith("127.0.0.") and source != "127.0.0.1" for source in per_source)


def test_small_scale_run_holds_every_connection_and_detects_only_the_victims() -> None:
    result = run_scale(quick=True, log=lambda _: None)
    assert result["failed"] == {}
    rows = {row["setup"]: row for row in result["rows"]}
    assert set(rows) == {"minimal ping/pong floor", "peerwatch", BATCHED}
    for row in rows.values():
        assert row["held"] == row["connections"] == QUICK.counts[0]
        assert row["pings_per_conn_s"] > 0.5  # heartbeats every 1 s really ran
        assert row["rss_per_conn_kib"] > 0
    runs = QUICK.stable[QUICK.counts[0]]
    for row in rows.values():
        assert len(row["runs"]) == runs  # consecutive runs, each a fresh server
        assert all(run["held"] == QUICK.counts[0] for run in row["runs"])
    for setup in ("peerwatch", BATCHED):
        per_run = rows[setup]["run_ratios"]
        assert len(per_run) == runs
        spread = rows[setup]["cpu_ratio"]
        assert spread["min"] == min(per_run) and spread["max"] == max(per_run)
        # the report shows the spread next to the ratio, and judges the worst run
        worst = next(c for c in scale_checks(result) if c.what.startswith(f"{setup} idle CPU"))
        assert "worst of" in worst.what and worst.measured == max(per_run)
        section = scale_section(result)
        assert any(", ".join(f"{r:.2f}" for r in per_run) in line for line in section)
        check_detection(rows[setup]["detection"])


def check_detection(detection: dict[str, Any]) -> None:
    assert detection["false_verdicts"] == 0, detection["false_examples"]
    assert detection["wrong_cause"] == []
    assert detection["frozen_ms"]["n"] == detection["killed_ms"]["n"] == QUICK.victims
    # the frozen lateness split by stage: read after written, handler after the verdict
    assert detection["read_ms"]["n"] == detection["handler_ms"]["n"] == QUICK.victims
    assert detection["handler_ms"]["min"] >= 0
    assert detection["others_still_held"] == detection["others"]
    # generous: a verdict a whole timeout late would mean the detection did not work
    assert detection["frozen_ms"]["p99"] < QUICK.timeout * 1000
