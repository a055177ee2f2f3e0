"""Idle cost: server CPU seconds per second and RSS per connection with 1 s heartbeats.

For each server (pinned to CPU 0) and each connection count, a load generator
on CPU 1 opens the connections; after a warm-up the server's CPU time is read
over a fixed window, and its RSS is compared with what the same process held
before the first connection (the "empty process"). The load generator counts
the pings it answered in the window, proving the heartbeats really ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.load import Flock
from bench.procs import Child, ChildFailed, CpuWindow, children, rss_kib
from bench.throughput import peerwatch_available


@dataclass(frozen=True)
class IdleSetup:
    label: str
    kind: str  # floor | websockets | keepalive | peerwatch
    uvloop: bool = False


SETUPS = [
    IdleSetup("keepalive only (kernel)", "keepalive"),
    IdleSetup("minimal ping/pong floor", "floor"),
    IdleSetup("websockets (ping_interval=1)", "websockets"),
    IdleSetup("peerwatch", "peerwatch"),
    IdleSetup("minimal ping/pong floor + uvloop", "floor", uvloop=True),
    IdleSetup("peerwatch + uvloop", "peerwatch", uvloop=True),
]


def measure(
    setup: IdleSetup, count: int, warmup: float, window: float, windows: int, processes: int
) -> dict[str, Any]:
    """Hold ``count`` connections; read the server's CPU over ``windows`` windows.

    The machine is shared: a burst of someone else's work inflates one window's
    CPU (cache, scheduling), so the row keeps the median window and all of them.
    """
    server_args = [setup.kind, "--max-seconds", str((window + 5) * windows + warmup + 300)]
    if setup.uvloop:
        server_args.append("--uvloop")
    server = Child("bench.idle_server", server_args, cpu=0)
    with children(server):
        port = server.read_event(30, "ready")["port"]
        time.sleep(0.5)
        empty_rss = rss_kib(server.pid)
        with Flock(setup.kind, port, count, processes, cpu=1) as flock:
            opened = flock.open(180)
            held = server.ask("stats", "stats")["connections"]
            if held != count:
                time.sleep(1.0)  # the last accepts may still be in the server's queue
                held = server.ask("stats", "stats")["connections"]
            time.sleep(warmup)
            samples = []
            for _ in range(windows):
                pings_before, at_before = flock.pings()
                cpu = CpuWindow(server.pid, *flock.pids)
                time.sleep(window)
                server_cpu, *client_cpu = cpu.stop()
                pings_after, at_after = flock.pings()
                samples.append(
                    {
                        "server_cpu": server_cpu,
                        "client_cpu": sum(client_cpu),
                        "other_cpu": cpu.other,
                        "pings_per_conn_s": (pings_after - pings_before)
                        / (at_after - at_before)
                        / count,
                    }
                )
            rss = rss_kib(server.pid)
            still_held = server.ask("stats", "stats")["connections"]
    middle = sorted(samples, key=lambda w: w["server_cpu"])[len(samples) // 2]
    return {
        "setup": setup.label,
        "connections": count,
        "held": min(held, still_held),
        "open_seconds": opened["seconds"],
        **middle,
        "server_cpu_windows": [w["server_cpu"] for w in samples],
        "empty_rss_kib": empty_rss,
        "rss_kib": rss,
        "rss_per_conn_kib": (rss - empty_rss) / count,
    }


def run_idle(quick: bool = False, log: Any = print) -> dict[str, Any]:
    counts = [200] if quick else [1000, 5000, 10000]
    warmup, window, windows = (1.0, 1.5, 1) if quick else (2.0, 5.0, 3)
    processes = 1 if quick else 2
    setups = [s for s in SETUPS if s.kind != "peerwatch" or peerwatch_available()]
    if quick:
        setups = [s for s in setups if not s.uvloop]
    rows = []
    failed: dict[str, str] = {}
    for count in counts:
        for setup in setups:
            try:
                row = measure(setup, count, warmup, window, windows, processes)
            except ChildFailed as exc:
                failed[f"{setup.label}, {count:,} connections"] = str(exc)[-600:]
                log(f"  idle {setup.label} {count} conns: FAILED {str(exc)[-300:]}")
                continue
            rows.append(row)
            log(
                f"  idle {setup.label:34s} {count:>6d} conns: server cpu {row['server_cpu']:.4f}"
                f" s/s  rss +{row['rss_per_conn_kib']:.2f} KiB/conn"
                f"  pings/conn/s {row['pings_per_conn_s']:.2f}  held {row['held']}"
                f"  other cpu {row['other_cpu']:.2f}"
                f"  windows {[round(c, 4) for c in row['server_cpu_windows']]}"
            )
    return {
        "warmup_s": warmup,
        "window_s": window,
        "windows": windows,
        "load_processes": processes,
        "rows": rows,
        "failed": failed,
    }
