"""The performance targets from the issues, checked against measured results.

A target is never claimed without its measurement: when a number is missing
(the benchmark did not run, or the setup failed) the verdict is "not measured".
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import throughput as tp


@dataclass(frozen=True)
class Check:
    what: str
    measured: float | None
    target: float
    higher_is_better: bool
    unit: str = "x"
    #: the value of each run, when ``measured`` is the worst of several (a target to be
    #: met in every run): shown as min / median / max next to it
    runs: tuple[float, ...] = ()

    @property
    def status(self) -> str:
        if self.measured is None:
            return "not measured"
        good = (
            self.measured >= self.target if self.higher_is_better else self.measured <= self.target
        )
        return "met" if good else "MISSED"

    @property
    def target_text(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        return f"{sign} {self.target:g}{self.unit}"

    def _text(self, value: float) -> str:
        return f"{value:.2f}{self.unit}" if self.unit == "x" else f"{value:.1f}{self.unit}"

    @property
    def measured_text(self) -> str:
        if self.measured is None:
            return "-"
        if len(self.runs) > 1:
            low, middle, high = min(self.runs), statistics.median(self.runs), max(self.runs)
            return (
                f"{self._text(self.measured)} (runs: min {self._text(low)}, median"
                f" {self._text(middle)}, max {self._text(high)}; {len(self.runs)} runs)"
            )
        return self._text(self.measured)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


Measure = Callable[[dict[str, Any]], float]


def msg_rate(run: dict[str, Any]) -> float:
    return float(run["messages_per_s"])


def server_cost(run: dict[str, Any]) -> float:
    return float(run["server_us_per_message"])


def busier_side_cost(run: dict[str, Any]) -> float:
    """CPU µs per message of the busier process: the one that bounds msg/s on two cores
    (results saved before the client's cost was recorded count the server only)."""
    return max(server_cost(run), float(run.get("client_us_per_message", 0.0)))


def paired_ratios(
    result: dict[str, Any], a: str, b: str, measure: Measure, size: int = 100
) -> tuple[float, ...]:
    """``measure`` of setup ``a`` over that of ``b``, run by run.

    Run i of every setup belongs to the same round of the round-robin, seconds apart:
    pairing them compares the two under the same load of the machine.
    """
    runs = {(r["setup"], r["size"]): r.get("runs", []) for r in result["rows"]}
    pairs = zip(runs.get((a, size), []), runs.get((b, size), []), strict=False)
    return tuple(measure(x) / measure(y) for x, y in pairs if measure(y))


def run_check(
    what: str, result: dict[str, Any], a: str, b: str, target: float, cost: Measure | None = None
) -> Check:
    """``a`` faster than ``b`` by ``target`` in EVERY run: measured is the worst paired run
    (issue 13). By msg/s, or by a ``cost`` per message (b's over a's: less is faster)."""
    if cost is None:
        runs = paired_ratios(result, a, b, msg_rate)
    else:
        runs = tuple(1 / r for r in paired_ratios(result, a, b, cost) if r)
    return Check(what, min(runs) if runs else None, target, True, runs=runs)


def throughput_checks(result: dict[str, Any]) -> list[Check]:
    ff, floor, ws = tp.PW_FF, tp.FLOOR, tp.WEBSOCKETS
    return [
        run_check("100 B fire-and-forget msg/s vs bare floor", result, ff, floor, 1.0),
        run_check("100 B fire-and-forget msg/s vs websockets", result, ff, ws, 5.0),
        run_check("100 B acknowledged msg/s vs bare floor", result, tp.PW_ACK, floor, 0.4),
        run_check(
            "100 B fire-and-forget, uvloop, vs uvloop floor", result, tp.PW_FF_UV, tp.FLOOR_UV, 0.6
        ),
        run_check(
            "100 B fire-and-forget, compiled core, vs bare floor",
            *(result, tp.PW_FF_COMPILED, floor, 1.0),
        ),
        run_check(
            "100 B fire-and-forget, compiled core, vs websockets",
            *(result, tp.PW_FF_COMPILED, ws, 5.0),
        ),
        run_check(
            "(cross-check) 100 B server CPU/msg: floor / peerwatch f&f",
            *(result, ff, floor, 1.0, server_cost),
        ),
        run_check(
            "(cross-check) 100 B server CPU/msg: websockets / peerwatch f&f",
            *(result, ff, ws, 5.0, server_cost),
        ),
        run_check(
            "(cross-check) 100 B busier side's CPU/msg: floor / peerwatch f&f",
            *(result, ff, floor, 1.0, busier_side_cost),
        ),
        run_check(
            "(cross-check) 100 B busier side's CPU/msg: websockets / peerwatch f&f",
            *(result, ff, ws, 5.0, busier_side_cost),
        ),
    ]


IDLE_FLOOR = "minimal ping/pong floor"
IDLE_FLOOR_UV = "minimal ping/pong floor + uvloop"
IDLE_WS = "websockets (ping_interval=1)"
IDLE_PW = "peerwatch"
IDLE_PW_UV = "peerwatch + uvloop"
IDLE_KEEPALIVE = "keepalive only (kernel)"


def idle_checks(result: dict[str, Any]) -> list[Check]:
    cpu = {(r["setup"], r["connections"]): r["server_cpu"] for r in result["rows"]}
    rss = {(r["setup"], r["connections"]): r["rss_per_conn_kib"] for r in result["rows"]}
    checks = []
    for count in (5000, 10000):
        checks += [
            Check(
                f"{count:,} conns: CPU vs minimal floor",
                ratio(cpu.get((IDLE_PW, count)), cpu.get((IDLE_FLOOR, count))),
                1.5,
                False,
            ),
            Check(
                f"{count:,} conns: CPU vs websockets",
                ratio(cpu.get((IDLE_PW, count)), cpu.get((IDLE_WS, count))),
                0.4,
                False,
            ),
            Check(
                f"{count:,} conns: uvloop CPU vs uvloop floor",
                ratio(cpu.get((IDLE_PW_UV, count)), cpu.get((IDLE_FLOOR_UV, count))),
                1.5,
                False,
            ),
        ]
    checks.append(
        Check("5,000 conns: RSS per connection", rss.get((IDLE_PW, 5000)), 8.0, False, " KiB")
    )
    return checks


def detection_checks(result: dict[str, Any]) -> list[Check]:
    """p99 lateness of frozen peers' verdicts (the issues' definition: verdict time - last
    evidence - timeout, as the observer saw them) and p99 delay after a kill."""
    checks = []
    for row in result["rows"]:
        checks.append(
            Check(
                f"{row['scenario']}: frozen p99 (verdict - last evidence - timeout)",
                row["frozen_internal_ms"].get("p99"),
                row["target_ms"],
                False,
                " ms",
            )
        )
        checks.append(
            Check(
                f"{row['scenario']}: killed p99 (verdict - kill)",
                row["killed_ms"].get("p99"),
                row["target_ms"],
                False,
                " ms",
            )
        )
    return checks


def accept_checks(result: dict[str, Any]) -> list[Check]:
    checks = []
    for row in result["rows"]:
        if row.get("workers", 1) >= 2:
            checks.append(
                Check(
                    f"{row['setup']}: busiest worker's share",
                    row["max_share"] * 100,
                    60.0,
                    False,
                    " %",
                )
            )
    return checks


#: peerwatch.serve in one process against a bare asyncio server exchanging the same bytes.
TARGET_STORM = 0.5


def storm_checks(result: dict[str, Any]) -> list[Check]:
    one = result["ratios"].get("peerwatch.serve")
    runs = [r for r in result["runs"].get("peerwatch.serve", []) if r is not None]
    return [
        Check(
            "reconnect storm: peerwatch.serve accept rate / bare HELLO exchange, median run",
            one["rate"]["median"] if one else None,
            TARGET_STORM,
            True,
        ),
        Check(
            "reconnect storm: the same, worst run",
            one["rate"]["min"] if one else None,
            TARGET_STORM,
            True,
        ),
        Check(
            "reconnect storm: real peers dropped by peerwatch.serve",
            float(sum(r["lost"] for r in runs)) if runs else None,
            0,
            False,
            "",
        ),
    ]


def exporter_checks(result: dict[str, Any]) -> list[Check]:
    return [
        Check(
            f"exporter CPU at {result['sockets']:,} sockets, scraped every 15 s",
            result.get("core_share_percent"),
            1.0,
            higher_is_better=False,
            unit=" % of a core",
        )
    ]


def inspect_checks(result: dict[str, Any]) -> list[Check]:
    wall = {row["command"]: row["wall_s"] for row in result["rows"]}
    cpu = {row["command"]: row["cpu_s"] for row in result["rows"]}
    n = f"{result['sockets']:,}"
    return [
        Check(
            f"inspect table at {n} sockets vs ss -tni (wall)",
            ratio(wall.get("peerwatch inspect"), wall.get("ss -tni")),
            3.0,
            False,
        ),
        Check(
            f"inspect table at {n} sockets vs ss -tni (CPU)",
            ratio(cpu.get("peerwatch inspect"), cpu.get("ss -tni")),
            3.0,
            False,
        ),
        Check(
            f"one --watch refresh at {n} sockets (CPU)",
            result["watch_frame_cpu_s"],
            1.0,
            False,
            " s",
        ),
    ]
