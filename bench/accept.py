"""Accept scaling: how fast connections are accepted, and how evenly workers share them.

Load-generator processes (uvloop, raw peerwatch client side, 256 handshakes in
flight each) open N connections together and hold them; the clock runs from
the first connect to the last HELLO back. Then the established sockets of each
server process are counted (psutil), which gives each worker's share. Setups:
a bare asyncio accept loop, ``peerwatch.serve`` in one process, and 1, 2 and 4
pre-forked workers each calling ``peerwatch.serve(reuse_port=True)`` (what
``peerwatch serve --workers N`` does; see ``bench/accept_server.py``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import time
from typing import Any

from bench.load import Flock
from bench.procs import Child, ChildFailed, CpuWindow
from bench.throughput import peerwatch_available


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


def measure(
    label: str, server: Child, port: int, workers: int, count: int, processes: int
) -> dict[str, Any]:
    client_kind = "floor" if label.startswith("bare") else "peerwatch"
    import psutil

    tree = [kid.pid for kid in psutil.Process(server.pid).children(recursive=True)]
    with Flock(client_kind, port, count, processes) as flock:
        window = CpuWindow(server.pid, *tree, *flock.pids)
        opened = flock.open(300)
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
        "server_cpu": sum(window.used[: 1 + len(tree)]) / window.wall,
        "client_cpu": sum(window.used[1 + len(tree) :]) / window.wall,
        "other_cpu": window.other,
    }


def serve_cli_available() -> bool:
    return importlib.util.find_spec("peerwatch.cli.serve") is not None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(module: str, args: list[str]) -> tuple[Child, int]:
    """Start one setup's server; returns it and its port once it accepts."""
    if module != "peerwatch":
        server = Child(module, args)
        try:
            return server, int(server.read_event(60, "ready")["port"])
        except BaseException:
            stop_tree(server)
            raise
    port = free_port()
    server = Child("peerwatch", ["serve", "--port", str(port), *args])
    deadline = time.monotonic() + 60
    try:
        while True:  # `peerwatch serve` says it in words: "... listening on 127.0.0.1:PORT, ..."
            line = server.read_event(max(0.1, deadline - time.monotonic()), "text")["line"]
            if "listening on" in line:
                return server, port
    except BaseException:
        stop_tree(server)
        raise


def stop_tree(server: Child) -> None:
    """Stop a server and every process it started (workers that outlive it are killed)."""
    import psutil

    try:
        kids = psutil.Process(server.pid).children(recursive=True)
    except psutil.Error:
        kids = []
    server.stop(grace=5.0)
    for kid in kids:
        with contextlib.suppress(psutil.Error):
            kid.kill()
            kid.wait(5)


def run_accept(quick: bool = False, log: Any = print) -> dict[str, Any]:
    count = 300 if quick else 10000
    processes = 1 if quick else 2
    plans: list[tuple[str, str, list[str], int]] = [
        ("bare asyncio accept loop", "bench.idle_server", ["keepalive"], 1),
    ]
    if peerwatch_available():
        plans.append(("peerwatch.serve, one process", "bench.idle_server", ["peerwatch"], 1))
        for workers in (1, 2) if quick else (1, 2, 4):
            if serve_cli_available():
                label = f"peerwatch serve --workers {workers}"
                args = ["--workers", str(workers), "--handler", "sink"]
                plans.append((label, "peerwatch", args, workers))
            else:
                label = f"{workers} SO_REUSEPORT worker{'s' if workers > 1 else ''}"
                plans.append((label, "bench.accept_server", ["--workers", str(workers)], workers))
    rows = []
    failed: dict[str, str] = {}
    for label, module, args, workers in plans:
        server: Child | None = None
        try:
            server, port = start_server(module, args)
            row = measure(label, server, port, workers, count, processes)
        except ChildFailed as exc:
            failed[label] = str(exc)[-600:]
            log(f"  accept {label}: FAILED {str(exc)[-300:]}")
            continue
        finally:
            if server is not None:
                stop_tree(server)
        rows.append(row)
        log(
            f"  accept {label:36s} {row['connections_per_s']:8.0f} conn/s"
            f"  shares {[round(s, 3) for s in row['shares']]}  held {row['held']}"
            f"  other cpu {row['other_cpu']:.2f}"
        )
    method = (
        f"{count:,} connections opened by {processes} load-generator process(es) (uvloop, a raw"
        " peerwatch client side doing the HELLO handshake, 256 handshakes in flight per"
        " process; the bare loop gets plain TCP connects) and held open; conn/s ="
        " connections / time from the first connect to the last completed handshake."
        " Shares are the established sockets each server process holds (psutil)."
        " Workers are `peerwatch serve --workers N --handler sink` (SO_REUSEPORT, one"
        " listening socket per worker process) where that command exists, else"
        " `peerwatch.serve(reuse_port=True)` in pre-forked processes (`bench/accept_server.py`)."
        " Nothing is pinned: workers and load generators share the machine's 2 cores."
    )
    return {"rows": rows, "method": method, "failed": failed, "load_processes": processes}
