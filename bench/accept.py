"""Accept scaling: how fast connections are accepted, and how evenly workers share them.

One load generator (uvloop, raw peerwatch client side, 256 handshakes in
flight) opens N connections and holds them; the clock stops when the last
HELLO came back. Then the established sockets of each server process are
counted (psutil), which gives each worker's share. Setups: a bare asyncio
accept loop, ``peerwatch.serve`` in one process, and ``peerwatch serve
--workers W`` (pre-forked workers, one SO_REUSEPORT listening socket each).
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import time
from typing import Any

from bench.procs import Child, CpuWindow, children
from bench.throughput import peerwatch_available


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def established_by_process(root_pid: int, port: int) -> dict[int, int]:
    """Established connections on ``port`` held by ``root_pid`` and by each of its children."""
    import psutil

    root = psutil.Process(root_pid)
    counts = {}
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            counts[proc.pid] = sum(
                1
                for c in proc.net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
            )
    return counts


def measure(label: str, server: Child, port: int, workers: int, count: int) -> dict[str, Any]:
    client_kind = "floor" if label.startswith("bare") else "peerwatch"
    client = Child("bench.idle_client", [client_kind, str(port), str(count)], cpu=1)
    with children(client):
        window = CpuWindow(server.pid, client.pid)
        opened = client.read_event(300, "ready")
        window.stop()
        time.sleep(0.5)
        counts = established_by_process(server.pid, port)
    holding = {pid: n for pid, n in counts.items() if n > 0}
    total = sum(holding.values())
    shares = sorted((n / total for n in holding.values()), reverse=True) if total else []
    return {
        "setup": label,
        "workers": workers,
        "connections": count,
        "held": total,
        "seconds": opened["seconds"],
        "connections_per_s": count / opened["seconds"],
        "shares": shares,
        "max_share": shares[0] if shares else 0.0,
        "client_cpu": window.used[1] / window.wall if window.wall else 0.0,
    }


def serve_cli_available() -> bool:
    return importlib.util.find_spec("peerwatch.cli.serve") is not None


def run_accept(quick: bool = False, log: Any = print) -> dict[str, Any]:
    count = 300 if quick else 10000
    plans: list[tuple[str, str, list[str], int]] = [
        ("bare asyncio accept loop", "bench.idle_server", ["keepalive"], 1),
    ]
    if peerwatch_available():
        plans.append(("peerwatch.serve, one process", "bench.idle_server", ["peerwatch"], 1))
    if serve_cli_available():
        for workers in (1, 2) if quick else (1, 2, 4):
            plans.append((f"peerwatch serve --workers {workers}", "peerwatch", [], workers))
    rows = []
    for label, module, plan_args, workers in plans:
        args = plan_args
        if module == "peerwatch":
            port = free_port()
            args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
            args += ["--handler", "sink", "--ready-json"]
            server = Child("peerwatch", args)
        else:
            server = Child(module, args, cpu=0)
        with children(server):
            ready = server.read_event(60, "ready")
            port = int(ready["port"])
            row = measure(label, server, port, workers, count)
        rows.append(row)
        log(
            f"  accept {label:36s} {row['connections_per_s']:8.0f} conn/s"
            f"  shares {[round(s, 3) for s in row['shares']]}  held {row['held']}"
        )
    method = (
        f"{count:,} connections opened by one load-generator process (uvloop, a raw peerwatch"
        " client side doing the HELLO handshake, 256 in flight; the bare loop gets plain TCP"
        " connects) and held open; conn/s = connections / time until the last handshake"
        " completed. Shares are the established sockets each server process holds (psutil)."
        " Workers are not pinned; the load generator is pinned to CPU 1."
    )
    return {"rows": rows, "method": method}
