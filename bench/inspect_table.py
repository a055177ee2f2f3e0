"""Inspect at scale: ``peerwatch inspect`` against ``ss`` on the same 10,000 loopback sockets.

A holder process (``bench/socket_holder.py``) keeps N sockets open; then, in
rounds, each command runs as an operator would type it, output to a file: ``ss
-tni`` (what the issue compares with), ``ss -tnip`` (with processes, as inspect
shows them), ``peerwatch inspect`` (the table, unbounded width as into a file, and
at 80 columns) and ``peerwatch inspect --json``. Each is timed on the wall clock
(interpreter start-up included) and in CPU seconds (user + system of the child,
which other load on the machine barely moves). The *watch frame* row is what one
``--watch`` refresh costs in a running process: read, judge, lay out a 50-line
screen at 80 columns. *Stages* splits one table's CPU time by what it does.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench.procs import Child

COMMANDS: dict[str, list[str]] = {
    "ss -tni": ["ss", "-tni"],
    "ss -tnip": ["ss", "-tnip"],
    "peerwatch inspect": [sys.executable, "-m", "peerwatch", "inspect"],
    "peerwatch inspect (80 columns)": [sys.executable, "-m", "peerwatch", "inspect"],
    "peerwatch inspect --json": [sys.executable, "-m", "peerwatch", "inspect", "--json"],
}
NARROW = {"peerwatch inspect (80 columns)"}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, CPU s, lines of output) of one run, its output going to a file."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        subprocess.run(argv, stdout=out, stderr=subprocess.DEVNULL, env=env, check=True)
        wall = time.perf_counter() - started
        out.seek(0)
        lines = sum(1 for _ in out)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, lines


def watch_frame() -> tuple[float, float]:
    """(wall s, CPU s) of one --watch refresh in this process: snapshot, an 80x50 screen."""
    from peerwatch.diag.table import TCP_INFO_FIELDS, render
    from peerwatch.diag.view import Filters, snapshot, summary

    started, cpu = time.perf_counter(), time.process_time()
    rows = snapshot(Filters(), figures=False, tcp_info_fields=TCP_INFO_FIELDS)  # as the CLI
    render(rows, 80, max_lines=47)
    summary(rows)
    return time.perf_counter() - started, time.process_time() - cpu


def stages() -> dict[str, float]:
    """CPU seconds of each stage of one table, in this process: where the time goes.

    The stages as the table runs them: only its TCP_INFO fields, no evidence figures,
    the cyclic GC paused.
    """
    from peerwatch.assessment.model import AssessPolicy
    from peerwatch.assessment.rules import assess_info
    from peerwatch.diag.owners import socket_owners
    from peerwatch.diag.sockdiag import read_sockets
    from peerwatch.diag.table import TCP_INFO_FIELDS, render
    from peerwatch.diag.view import Filters, snapshot
    from peerwatch.gcpause import gc_paused

    clock, policy = time.process_time, AssessPolicy()
    spent: dict[str, float] = {}
    with gc_paused():
        started = clock()
        records = read_sockets(tcp_info_fields=TCP_INFO_FIELDS)
        spent["read sock_diag"] = clock() - started
        started = clock()
        socket_owners()
        spent["owners (/proc)"] = clock() - started
        started = clock()
        for record in records:
            _ = record.info
        spent["parse TCP_INFO"] = clock() - started
        started = clock()
        for record in records:
            assess_info(record.facts(), policy, figures=False)
        spent["assess"] = clock() - started
        rows = snapshot(Filters(), figures=False, tcp_info_fields=TCP_INFO_FIELDS)
        started = clock()
        render(rows, None)
        spent["lay out every row"] = clock() - started
    return spent


def run_inspect(quick: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure in a network namespace of its own when possible (as root), so that both
    commands see exactly the benchmark's sockets, not whatever else runs on the machine
    (on the shared CI host, 18,000 other connections)."""
    sockets, repeats = (500, 1) if quick else (10_000, 5)
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return measure(sockets, repeats, log) | {"private_netns": False}
    argv = ["unshare", "--net", "--", sys.executable, "-m", "bench.inspect_table"]
    log("   in a private network namespace")
    done = subprocess.run(
        [*argv, str(sockets), str(repeats)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.inspect_table exited with {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result | {"private_netns": True}


def measure(sockets: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    # As installed: bytecode cached (pip compiles it), whatever this shell says; in a
    # directory of its own so the checkout stays clean
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "PYTHONDONTWRITEBYTECODE")}
    env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="peerwatch-bench-pyc-")
    samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in COMMANDS}
    frames: list[tuple[float, float]] = []
    profile: list[dict[str, float]] = []
    with Child("bench.socket_holder", [str(sockets)]) as holder:
        ready = holder.read_event(120, "ready")
        log(f"   holding {ready['sockets']} loopback sockets (port {ready['port']})")
        narrow = {**env, "COLUMNS": "80"}
        for name, argv in COMMANDS.items():  # warm the page cache and the bytecode once
            timed(argv, narrow if name in NARROW else env)
        for round_ in range(repeats):
            for name, argv in COMMANDS.items():
                samples[name].append(timed(argv, narrow if name in NARROW else env))
            frames.append(watch_frame())
            profile.append(stages())
            log(f"   round {round_ + 1}/{repeats} done")
    rows = []
    for name, runs in samples.items():
        rows.append(
            {
                "command": name,
                "wall_s": statistics.median(r[0] for r in runs),
                "cpu_s": statistics.median(r[1] for r in runs),
                "lines": runs[-1][2],
                "runs": [{"wall_s": r[0], "cpu_s": r[1]} for r in runs],
            }
        )
    return {
        "sockets": ready["sockets"],
        "repeats": repeats,
        "rows": rows,
        "watch_frame_s": statistics.median(f[0] for f in frames),
        "watch_frame_cpu_s": statistics.median(f[1] for f in frames),
        "watch_frames": [{"wall_s": f[0], "cpu_s": f[1]} for f in frames],
        "stages_cpu_s": {name: statistics.median(p[name] for p in profile) for name in profile[0]},
    }


if __name__ == "__main__":  # python -m bench.inspect_table SOCKETS REPEATS, in its own netns
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    print(
        json.dumps(
            measure(
                int(sys.argv[1]), int(sys.argv[2]), lambda s: print(s, file=sys.stderr, flush=True)
            )
        )
    )
