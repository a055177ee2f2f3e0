"""Reconnect storm: every peer connects at once to a server that just started.

``python -m bench storm`` (about 10 minutes; ``--quick``: a few seconds).

Setups, each started fresh for every run:

- a bare asyncio server that exchanges the same handshake bytes
  (``bench.scale_server hello``: read HELLO, write HELLO, answer one PING);
- ``peerwatch.serve`` in one process (``bench.scale_server peerwatch``);
- ``peerwatch serve --workers 2`` and ``--workers 4`` (SO_REUSEPORT workers).

Load generators (``bench.scale_clients --confirm``, 256 handshakes in flight
each) send HELLO and a PING in one write and count a peer in at the server's
PONG: it proves the server *read* the peer's HELLO (a peerwatch server says its
own HELLO as it accepts, before reading the peer's), and it is the same proof
for every setup. A peer the server drops (GOODBYE before the PONG) is counted
as lost. Each storm uses source addresses of its own (127.N.P.S), so none finds
ports still in TIME_WAIT from the one before (``sources``).

Same conditions: the one-process servers run pinned to CPU 0 and the load
generators to CPU 1 in every run; workers are not pinned (they are meant to use
both cores, which they then share with the load generators). Runs are
interleaved round-robin, the order rotating each round, and every ratio is
taken between the runs of one round, then given as min/median/max. Each run
reports the server's CPU per connection (all its processes), the load
generators' own CPU, the time the server waited for a CPU (run queue) and what
the rest of the machine used meanwhile, so a disturbed run shows as one.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.accept import start_server, stop_tree
from bench.procs import Child, ChildFailed, CpuWindow
from bench.scale_report import fmt_spread

#: Handshakes in flight per load-generator process (``bench.idle_client.CONCURRENCY``).
LOAD_PROCESSES = 2
INTERVAL, TIMEOUT = 10.0, 30.0
#: Source addresses per load process and run (each has ~28,000 ephemeral ports).
SOURCES_PER_PROCESS = 2


@dataclass(frozen=True)
class StormSetup:
    label: str
    kind: str  # hello | peerwatch: bench.scale_server; cli: peerwatch serve --workers N
    workers: int = 1


BARE = StormSetup("bare asyncio HELLO exchange", "hello")
ONE = StormSetup("peerwatch.serve", "peerwatch")
SETUPS = [BARE, ONE, StormSetup("peerwatch serve --workers 2", "cli", 2)]
SETUPS.append(StormSetup("peerwatch serve --workers 4", "cli", 4))
ANALYSIS = Path(__file__).resolve().parent / "storm_analysis.md"


def start(setup: StormSetup, count: int) -> tuple[Child, int]:
    if setup.kind == "cli":
        timing = ["--interval", str(INTERVAL), "--timeout", str(TIMEOUT)]
        args = ["--workers", str(setup.workers), "--handler", "sink", *timing]
        return start_server("peerwatch", args)
    args = [setup.kind, "--connections", str(count), "--interval", str(INTERVAL)]
    server = Child("bench.scale_server", [*args, "--timeout", str(TIMEOUT)], cpu=0)
    try:
        return server, int(server.read_event(30, "ready")["port"])
    except BaseException:
        server.stop()
        raise


def sources(storm: int, process: int) -> list[str]:
    """Loopback addresses no earlier storm used: 127.<storm+1>.<process>.<10...>.

    Measured: storms that reused the addresses of the storm before made the load
    generators' own CPU per connection 10-30x (the kernel's search for a free port
    in ``bind(addr, 0)`` walks past the last storm's ports, still in TIME_WAIT), so
    their HELLOs lagged, the rate fell tenfold and peerwatch dropped peers as silent.
    """
    return [f"127.{storm % 250 + 1}.{process}.{10 + i}" for i in range(SOURCES_PER_PROCESS)]


def storm_once(setup: StormSetup, count: int, storm: int) -> dict[str, Any]:
    """One storm against a fresh server: rate, CPU per connection, peers lost."""
    import psutil

    server, port = start(setup, count)
    kids: list[Child] = []
    try:
        shares = [count // LOAD_PROCESSES + (i < count % LOAD_PROCESSES) for i in range(2)]
        for index, share in enumerate(shares):
            args = ["peerwatch", str(port), str(share), "--go", "--confirm"]
            args += ["--sources", ",".join(sources(storm, index)), "--max-seconds", "600"]
            args += ["--interval", str(INTERVAL), "--timeout", str(TIMEOUT)]
            kids.append(Child("bench.scale_clients", args, cpu=1))
        for kid in kids:
            kid.read_event(60, "armed")
        tree = [server.pid, *(p.pid for p in psutil.Process(server.pid).children(recursive=True))]
        window = CpuWindow(*tree, *(kid.pid for kid in kids))
        for kid in kids:
            kid.command("go")
        deadline = time.monotonic() + 60 + count / 100
        ready = [kid.read_event(max(1.0, deadline - time.monotonic()), "ready") for kid in kids]
        window.stop()
    finally:
        for kid in reversed(kids):
            kid.stop()
        stop_tree(server)
    seconds = max(r["at"] for r in ready) - min(r["started"] for r in ready)
    held = sum(int(r["connections"]) for r in ready)
    why: dict[str, int] = {}
    for report in ready:
        for reason, n in report.get("lost", {}).items():
            why[reason] = why.get(reason, 0) + n
    servers = len(tree)
    return {
        "connections_per_s": count / seconds,
        "seconds": seconds,
        "lost": count - held,
        "lost_why": why,
        "server_us_per_conn": sum(window.used[:servers]) / count * 1e6,
        "load_us_per_conn": sum(window.used[servers:]) / count * 1e6,
        "server_waited_s": sum(window.waited[:servers]),
        "other_cpu": window.other,
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run_storm(quick: bool = False, log: Any = print) -> dict[str, Any]:
    count, runs = (300, 2) if quick else (10_000, 5)
    setups = SETUPS[:3] if quick else SETUPS
    samples: dict[str, list[dict[str, Any]]] = {s.label: [] for s in setups}
    failed: dict[str, str] = {}
    for run in range(runs):
        order = setups[run % len(setups) :] + setups[: run % len(setups)]
        for position, setup in enumerate(order):
            try:
                sample = storm_once(setup, count, run * len(setups) + position)
            except ChildFailed as exc:
                failed[f"{setup.label}, run {run + 1}"] = str(exc)[-600:]
                log(f"  storm {setup.label}: FAILED {str(exc)[-300:]}")
                sample = None
            samples[setup.label].append(sample)
            if sample is not None:
                log(
                    f"  storm {setup.label:30s} {sample['connections_per_s']:7.0f}/s"
                    f" server {sample['server_us_per_conn']:4.0f} us/conn"
                    f" load {sample['load_us_per_conn']:4.0f} us/conn"
                    f" lost {sample['lost']} waited {sample['server_waited_s']:.1f} s"
                    f" other {sample['other_cpu']:.2f}"
                )
    ratios: dict[str, dict[str, dict[str, float]]] = {}
    for setup in setups[1:]:
        pairs = [
            (bare, mine)
            for bare, mine in zip(samples[BARE.label], samples[setup.label], strict=True)
            if bare is not None and mine is not None
        ]
        if not pairs:
            continue
        ratios[setup.label] = {
            "rate": spread([m["connections_per_s"] / b["connections_per_s"] for b, m in pairs]),
            "cpu": spread([m["server_us_per_conn"] / b["server_us_per_conn"] for b, m in pairs]),
        }
    return {
        "connections": count,
        "load_processes": LOAD_PROCESSES,
        "runs": samples,
        "ratios": ratios,
        "failed": failed,
    }


# ------------------------------------------------------------------ report


def fmt(values: list[float], pattern: str) -> str:
    if not values:
        return "-"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{pattern.format(mid)} ({pattern.format(low)}-{pattern.format(high)})"


def storm_section(result: dict[str, Any]) -> list[str]:
    count = result["connections"]
    some = next(iter(result["runs"].values()), [])
    lines = [
        f"{count:,} peers connect at once to a server that just started; each sends HELLO"
        " and a PING in one write and counts as in at the server's PONG (the server read"
        f" its HELLO). {result['load_processes']} load-generator processes (uvloop, 256"
        " handshakes in flight each) pinned to CPU 1; the one-process servers pinned to"
        " CPU 0; workers unpinned. Every run starts a fresh server; the"
        f" {len(some)} rounds are interleaved, the order rotating. Cells: median (min-max)"
        " over the runs; ratios are taken within each round. *server µs/conn* counts every"
        " server process; *load µs/conn* is the load generators' own CPU; *waited* is the"
        " time the server waited for a CPU; *other* the rest of the machine (of 2 cores)."
        " `python -m bench storm`.",
        "",
        "| setup | connections/s | ratio to bare | server µs/conn | CPU ratio to bare |"
        " load µs/conn | peers lost | server waited | other CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, runs in result["runs"].items():
        ok = [r for r in runs if r is not None]
        ratio = result["ratios"].get(label)
        rate_ratio = cpu_ratio = "-"
        if ratio:
            rate_ratio = fmt_spread(ratio["rate"])
            cpu_ratio = fmt_spread(ratio["cpu"])
        lines.append(
            f"| {label} | {fmt([r['connections_per_s'] for r in ok], '{:,.0f}')} |"
            f" {rate_ratio} | {fmt([r['server_us_per_conn'] for r in ok], '{:.0f}')} |"
            f" {cpu_ratio} | {fmt([r['load_us_per_conn'] for r in ok], '{:.0f}')} |"
            f" {sum(r['lost'] for r in ok)} of {count * len(ok):,} |"
            f" {fmt([r['server_waited_s'] for r in ok], '{:.1f} s')} |"
            f" {fmt([r['other_cpu'] for r in ok], '{:.2f}')} |"
        )
    for label, runs in result["runs"].items():
        why: dict[str, int] = {}
        for run in runs:
            for reason, n in (run or {}).get("lost_why", {}).items():
                why[reason] = why.get(reason, 0) + n
        if why:
            ranked = sorted(why.items(), key=lambda item: -item[1])
            told = "; ".join(f"{n} `{reason}`" for reason, n in ranked)
            lines += ["", f"Peers lost by {label}, as the load generators saw it: {told}."]
    every = [
        f"{label}: " + ", ".join("-" if r is None else f"{r['connections_per_s']:,.0f}" for r in rs)
        for label, rs in result["runs"].items()
    ]
    lines += ["", "Every run, in order (connections/s): " + "; ".join(every) + "."]
    for label, reason in result.get("failed", {}).items():
        last = (reason.strip().splitlines() or ["?"])[-1][:300]
        lines += ["", f"> **{label}: not measured.** `{last}`"]
    if ANALYSIS.exists():
        lines += ["", "### Reconnect storm: analysis", "", ANALYSIS.read_text().strip()]
    return lines
