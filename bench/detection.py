"""Detection precision: how late after its deadline does peerwatch give its verdict?

Peers (one process each) are frozen with SIGSTOP or killed with SIGKILL, one
every ``stagger`` seconds. For a frozen peer the verdict is due exactly
``timeout`` after the last evidence of life, so its lateness is

* internal: ``verdict.silent_for - timeout`` (peerwatch's own account), and
* external: ``t_callback - t_freeze_sent - timeout``, from clocks outside the
  liveness logic: the peer stamps its last message right before it stops
  itself, the observer stamps the verdict callback (both CLOCK_MONOTONIC).
  Since the last evidence is at or after the stamp, this slightly overstates
  the lateness, never understates it.

A killed peer's kernel closes the socket (FIN or RST), so no timeout is
involved: its number is ``t_callback - t_kill``, which includes the time the
kernel takes to tear the process down.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from bench.procs import Child, ChildFailed, CpuWindow, children


@dataclass(frozen=True)
class Scenario:
    label: str
    peers: int  # frozen; as many again are killed
    busy: int = 0  # other connections on the observer, each sending 1 message/s
    interval: float = 0.25
    timeout: float = 1.0
    target_ms: float = 50.0


SCENARIOS = [
    Scenario("issue 2: 50 frozen + 50 killed", 50, target_ms=50.0),
    Scenario("issue 5: 200 frozen + 200 killed, unloaded", 200, target_ms=20.0),
    Scenario(
        "issue 5: 200 frozen + 200 killed, 5,000 busy connections", 200, busy=5000, target_ms=100.0
    ),
]


#: The verdicts a frozen and a killed peer should get; others are reported, not timed.
EXPECTED = {"frozen": ("HUNG", "SILENT"), "killed": ("EOF", "RESET")}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50) * 1000,
        "p99": percentile(values, 99) * 1000,
        "max": max(values) * 1000,
        "min": min(values) * 1000,
    }


def run_scenario(scenario: Scenario, stagger: float, log: Any) -> dict[str, Any]:
    timing = ["--interval", str(scenario.interval), "--timeout", str(scenario.timeout)]
    observer = Child("bench.detect_observer", timing, cpu=0)
    kids: list[Child] = [observer]
    with children(observer):
        port = observer.read_event(30, "ready")["port"]
        if scenario.busy:
            busy = Child(
                "bench.idle_client",
                ["peerwatch", str(port), str(scenario.busy), "--send-every", "1.0"],
                cpu=1,
            )
            kids.append(busy)
            busy.read_event(120, "ready")
        # Only the observer's timing is measured. The peers are patient (a peer starved of
        # CPU while 400 of them start on one core must not give up on the observer) and
        # never need to ping (the observer's pings every 0.25 s are their evidence). Their
        # interval stays within 2x the observer's: peerwatch limits the pings it accepts
        # per *its own* interval, so a peer with interval 2.5 s would count the observer's
        # 10 pings per 2.5 s as abuse and say GOODBYE(TOO_MANY_PINGS) (see docs).
        patient = ["--interval", str(2 * scenario.interval), "--timeout", "10"]
        flock = Child("bench.detect_peers", [str(port), str(2 * scenario.peers), *patient], cpu=1)
        kids.append(flock)
        try:
            pids: list[int] = flock.read_event(120, "ready")["pids"]
            if len(pids) != 2 * scenario.peers:
                raise ChildFailed(f"only {len(pids)} of {2 * scenario.peers} peers connected")
            time.sleep(max(1.0, 4 * scenario.interval))  # heartbeats in steady state
            observer.ask("reset", "reset")
            window = CpuWindow(observer.pid)
            acted: dict[int, tuple[str, float]] = {}
            for index, pid in enumerate(pids):
                if index % 2 == 0:
                    acted[pid] = ("frozen", time.monotonic())
                    os.kill(pid, signal.SIGUSR1)  # the peer stamps its last word and SIGSTOPs
                else:
                    acted[pid] = ("killed", time.monotonic())
                    os.kill(pid, signal.SIGKILL)
                time.sleep(stagger)
            verdicts: dict[int, dict[str, Any]] = {}
            deadline = time.monotonic() + scenario.timeout + 15
            while len(verdicts) < len(pids) and time.monotonic() < deadline:
                event = observer.read_event(max(0.1, deadline - time.monotonic()), "verdict")
                verdicts[int(event["pid"])] = event
            (observer_cpu,) = window.stop()
            held_up = observer.ask("stats", "stats")
        finally:
            for kid in reversed(kids[1:]):
                kid.stop()
    internal, external, killed = [], [], []
    causes: dict[str, dict[str, int]] = {"frozen": {}, "killed": {}}
    stalls = 0
    worst_stall = 0.0
    for pid, (action, acted_at) in acted.items():
        verdict = verdicts.get(pid)
        if verdict is None:
            causes[action]["none"] = causes[action].get("none", 0) + 1
            continue
        causes[action][verdict["cause"]] = causes[action].get(verdict["cause"], 0) + 1
        stalls += verdict["local_stall"] > 0
        worst_stall = max(worst_stall, verdict["local_stall"])
        if verdict["cause"] not in EXPECTED[action]:
            continue  # counted in `causes`; its timing is not that of the event measured
        if action == "frozen":
            internal.append(verdict["silent_for"] - scenario.timeout)
            if verdict["freeze_sent"] is not None:
                external.append(verdict["callback_at"] - verdict["freeze_sent"] - scenario.timeout)
        else:
            killed.append(verdict["callback_at"] - acted_at)
    result: dict[str, Any] = {
        "scenario": scenario.label,
        "peers": scenario.peers,
        "busy": scenario.busy,
        "interval": scenario.interval,
        "timeout": scenario.timeout,
        "target_ms": scenario.target_ms,
        "frozen_internal_ms": summary_ms(internal),
        "frozen_external_ms": summary_ms(external),
        "killed_ms": summary_ms(killed),
        "causes": causes,
        "verdicts_with_local_stall": stalls,
        "worst_local_stall_ms": worst_stall * 1000,
        "observer_cpu": observer_cpu,
        "observer_runqueue_wait_s": window.waited[0],
        "loop_lag_p99_ms": held_up["loop_lag_p99_ms"],
        "loop_lag_max_ms": held_up["loop_lag_max_ms"],
        "gc": held_up["gc"],
        "other_cpu": window.other,
        "samples": {"internal": internal, "external": external, "killed": killed},
    }
    log(
        f"  detection {scenario.label}: frozen internal {fmt(result['frozen_internal_ms'])};"
        f" external {fmt(result['frozen_external_ms'])}; killed {fmt(result['killed_ms'])};"
        f" causes {causes}; verdicts after a local stall {stalls}"
        f" (worst {worst_stall * 1000:.0f} ms); other cpu {window.other:.2f};"
        f" observer waited for a CPU {window.waited[0]:.3f} s of {window.wall:.1f} s;"
        f" observer loop lag p99 {held_up['loop_lag_p99_ms']:.1f} max"
        f" {held_up['loop_lag_max_ms']:.1f} ms; gc {held_up['gc']}"
    )
    return result


def fmt(stats: dict[str, Any]) -> str:
    if not stats.get("n"):
        return "no samples"
    return (
        f"p50 {stats['p50']:.1f} p99 {stats['p99']:.1f} max {stats['max']:.1f} ms (n={stats['n']})"
    )


def run_detection(quick: bool = False, log: Any = print) -> dict[str, Any]:
    scenarios = [Scenario("quick: 5 frozen + 5 killed", 5)] if quick else SCENARIOS
    stagger = 0.02
    rows = []
    failed: dict[str, str] = {}
    for scenario in scenarios:
        try:
            rows.append(run_scenario(scenario, stagger, log))
        except ChildFailed as exc:
            failed[scenario.label] = str(exc)[-600:]
            log(f"  detection {scenario.label}: FAILED {str(exc)[-300:]}")
    return {"stagger_s": stagger, "rows": rows, "failed": failed}
