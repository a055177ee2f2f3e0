"""Throughput targets hold in every run: ratios are paired run by run, the worst one decides,
and the report shows the spread next to it."""

from __future__ import annotations

from typing import Any

from bench import targets
from bench import throughput as tp


def row(setup: str, rates: list[float], server_us: list[float]) -> dict[str, Any]:
    runs = [
        {"messages_per_s": rate, "server_us_per_message": us, "client_us_per_message": 1.0}
        for rate, us in zip(rates, server_us, strict=True)
    ]
    return {"setup": setup, "size": 100, "messages_per_s": max(rates), "runs": runs}


RESULT = {
    "rows": [
        row(tp.FLOOR, [100.0, 200.0, 400.0], [2.0, 2.0, 2.0]),
        row(tp.PW_FF, [150.0, 180.0, 800.0], [1.0, 4.0, 2.0]),
    ]
}


def test_each_run_is_compared_with_the_same_round_of_the_other_setup() -> None:
    assert targets.paired_ratios(RESULT, tp.PW_FF, tp.FLOOR, targets.msg_rate) == (1.5, 0.9, 2.0)


def test_the_worst_run_decides_and_the_spread_is_shown() -> None:
    check = targets.run_check("ff vs floor", RESULT, tp.PW_FF, tp.FLOOR, 1.0)
    assert check.measured == 0.9 and check.status == "MISSED"  # best/best would say 2.0x
    assert check.measured_text == "0.90x (runs: min 0.90x, median 1.50x, max 2.00x; 3 runs)"


def test_a_cost_ratio_is_inverted_so_that_higher_is_faster() -> None:
    check = targets.run_check("cpu", RESULT, tp.PW_FF, tp.FLOOR, 1.0, cost=targets.busier_side_cost)
    assert check.runs == (2.0, 0.5, 1.0) and check.measured == 0.5


def test_a_setup_that_did_not_run_is_not_measured() -> None:
    check = targets.run_check("ws", RESULT, tp.PW_FF, tp.WEBSOCKETS, 5.0)
    assert check.measured is None and check.status == "not measured"
