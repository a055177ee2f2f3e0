"""Throughput: messages/s on one pipelined connection, consumed by the server application.

Each server implementation runs in its own process pinned to CPU 0, the load
generator in another pinned to CPU 1. Runs of all implementations are
interleaved round-robin (so a slow drift of the machine hits all of them alike).

Two numbers per setup, because the machine may be shared:

* messages/s, best of the repetitions (interference only ever lowers it);
* the server's CPU microseconds per message, median of the repetitions: what one
  message costs the receiving process, which other load on the machine barely moves.

The client's CPU share shows which side was the bottleneck (1.0 = saturated).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import Child, ChildFailed, CpuWindow, children

#: ``make compiled`` puts the mypyc-compiled core here (tools/compile_core.py); when it is
#: there, the compiled build is measured too, side by side with the pure one.
COMPILED = Path(__file__).resolve().parent.parent / "build" / "compiled"


@dataclass(frozen=True)
class Setup:
    label: str
    kind: str  # floor | websockets | peerwatch
    uvloop: bool = False
    mode: str = "ff"  # ff | await | ack (bench/tp_client.py)
    compiled: bool = False  # peerwatch from COMPILED
    send_queue: int = 0  # peerwatch's send_queue; 0: the default

    @property
    def server_key(self) -> tuple[str, bool, bool]:
        return (self.kind, self.uvloop, self.compiled)

    @property
    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(COMPILED)} if self.compiled else {}


FLOOR = "bare floor"
WEBSOCKETS = "websockets"
PW_FF = "peerwatch fire-and-forget"
PW_ACK = "peerwatch acknowledged"
#: fire-and-forget through ``await enqueue`` (a coroutine and a Delivery per message): what
#: ``enqueue_nowait`` saves, side by side
PW_FF_AWAIT = "peerwatch ff via await enqueue"
FLOOR_UV = "bare floor + uvloop"
WEBSOCKETS_UV = "websockets + uvloop"
PW_FF_UV = "peerwatch fire-and-forget + uvloop"
PW_ACK_UV = "peerwatch acknowledged + uvloop"
PW_FF_COMPILED = "peerwatch fire-and-forget, compiled core"

SETUPS = [
    Setup(FLOOR, "floor"),
    Setup(WEBSOCKETS, "websockets"),
    Setup(PW_FF, "peerwatch"),
    Setup(PW_FF_AWAIT, "peerwatch", mode="await"),
    Setup(PW_ACK, "peerwatch", mode="ack"),
    Setup(FLOOR_UV, "floor", uvloop=True),
    Setup(WEBSOCKETS_UV, "websockets", uvloop=True),
    Setup(PW_FF_UV, "peerwatch", uvloop=True),
    Setup(PW_ACK_UV, "peerwatch", uvloop=True, mode="ack"),
    Setup(PW_FF_COMPILED, "peerwatch", compiled=True),
]
SIZES = [100, 1024 * 1024]


def compiled_available() -> bool:
    return any(COMPILED.glob("peerwatch/core/*.so"))


def peerwatch_available() -> bool:
    try:
        import peerwatch
    except ImportError:
        return False
    return hasattr(peerwatch, "serve") and hasattr(peerwatch, "connect")


def one_run(server: Child, setup: Setup, port: int, size: int, seconds: float) -> dict[str, Any]:
    args = [setup.kind, str(port), "--size", str(size), "--seconds", str(seconds)]
    args += ["--mode", setup.mode, "--max-seconds", str(seconds * 20 + 60)]
    if setup.uvloop:
        args.append("--uvloop")
    if setup.send_queue:
        args += ["--send-queue", str(setup.send_queue)]
    with Child("bench.tp_client", args, cpu=1, env=setup.env) as client:
        client.read_event(30, "start")
        window = CpuWindow(server.pid, client.pid)
        result = client.read_event(seconds * 20 + 60, "result")
        server_cpu, client_cpu = window.stop()
    if bool(result.get("compiled")) != setup.compiled:  # PYTHONPATH picked the wrong build
        raise ChildFailed(f"{setup.label}: the client ran compiled={result.get('compiled')}")
    consumed = int(result["consumed"])
    if consumed != result["sent"]:
        raise ChildFailed(f"{setup.label}: sent {result['sent']} but consumed {consumed}")
    elapsed = float(result["seconds"])
    return {
        "messages_per_s": consumed / elapsed,
        "server_cpu": server_cpu,
        "client_cpu": client_cpu,
        "other_cpu": window.other,
        "server_us_per_message": window.used[0] / consumed * 1e6,
        "client_us_per_message": window.used[1] / consumed * 1e6,
        "messages": consumed,
        "seconds": elapsed,
    }


ServerKey = tuple[str, bool, bool]


def start_servers(
    setups: list[Setup],
) -> tuple[dict[ServerKey, tuple[Child, int]], dict[ServerKey, str]]:
    servers: dict[ServerKey, tuple[Child, int]] = {}
    failures: dict[ServerKey, str] = {}
    for setup in setups:
        key = setup.server_key
        if key in servers or key in failures:
            continue
        child = Child(
            "bench.tp_server",
            [setup.kind] + (["--uvloop"] if setup.uvloop else []),
            cpu=0,
            env=setup.env,
        )
        try:
            servers[key] = (child, int(child.read_event(30, "ready")["port"]))
        except ChildFailed as exc:
            child.stop()
            failures[key] = str(exc)
    return servers, failures


def run_throughput(quick: bool = False, log: Any = print) -> dict[str, Any]:
    seconds = 0.3 if quick else 2.0
    repeats = 1 if quick else 5
    setups = [s for s in SETUPS if s.kind != "peerwatch" or peerwatch_available()]
    setups = [s for s in setups if not s.compiled or compiled_available()]
    if quick:
        setups = [s for s in setups if not s.uvloop]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    failed: dict[str, str] = {}
    servers, server_failures = start_servers(setups)
    for setup in setups:
        if setup.server_key in server_failures:
            failed[setup.label] = server_failures[setup.server_key]
    try:
        for repeat in range(repeats):
            for size in SIZES:
                for setup in setups:
                    if setup.label in failed:
                        continue
                    server, port = servers[setup.server_key]
                    try:
                        run = one_run(server, setup, port, size, seconds)
                    except ChildFailed as exc:
                        failed[setup.label] = str(exc)[-600:]
                        log(f"  throughput {setup.label}: FAILED {str(exc)[-300:]}")
                        continue
                    runs.setdefault((setup.label, size), []).append(run)
                    log(
                        f"  throughput {setup.label:36s} {size:>8d} B  run {repeat + 1}:"
                        f" {run['messages_per_s']:>10.0f} msg/s"
                        f"  server {run['server_us_per_message']:8.2f} us/msg"
                        f"  cpu server {run['server_cpu']:.2f} client {run['client_cpu']:.2f}"
                        f" other {run['other_cpu']:.2f}"
                    )
    finally:
        with children(*(child for child, _ in servers.values())):
            pass
    rows = []
    for (label, size), measured in runs.items():
        best = max(r["messages_per_s"] for r in measured)
        rows.append(
            {
                "setup": label,
                "size": size,
                "messages_per_s": best,
                "median_messages_per_s": statistics.median(r["messages_per_s"] for r in measured),
                "mib_per_s": best * size / 2**20,
                "server_us_per_message": statistics.median(
                    r["server_us_per_message"] for r in measured
                ),
                "client_us_per_message": statistics.median(
                    r["client_us_per_message"] for r in measured
                ),
                "server_cpu": statistics.median(r["server_cpu"] for r in measured),
                "client_cpu": statistics.median(r["client_cpu"] for r in measured),
                "other_cpu": statistics.median(r["other_cpu"] for r in measured),
                "runs": measured,
            }
        )
    return {"seconds_per_run": seconds, "repeats": repeats, "rows": rows, "failed": failed}
