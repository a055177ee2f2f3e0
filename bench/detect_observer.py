"""The observer of the detection benchmark: a peerwatch server that reports every verdict.

``python -m bench.detect_observer --interval I --timeout T [--uvloop]``

Each peer introduces itself with ``PID <pid>``; a frozen peer's last message is
``FREEZE <monotonic time>``. For every verdict the observer prints the peer's
pid, the verdict's own ``detected_at`` and ``silent_for``, the wall-clock
``time.monotonic()`` taken inside the verdict callback, and the freeze stamp.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

from bench.aiohelpers import run, stdin_lines
from bench.procs import child_setup, emit


class LoopWatch:
    """What held this process's event loop up: garbage-collection pauses and loop lag.

    A 10 ms ticker measures how late the loop runs it; ``gc.callbacks`` time each
    collection. ``reset`` starts a new measurement (the kill phase of a scenario).
    """

    TICK = 0.01

    def __init__(self) -> None:
        self.gc_started = 0.0
        self.reset()
        gc.callbacks.append(self.on_gc)

    def reset(self) -> None:
        self.gc_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.lags: list[float] = []

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.gc_started = time.perf_counter()
        else:
            self.gc_pauses[info["generation"]].append(time.perf_counter() - self.gc_started)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.TICK

        def tick() -> None:
            nonlocal due
            now = loop.time()
            self.lags.append(now - due)
            due = now + self.TICK
            loop.call_at(due, tick)

        loop.call_at(due, tick)

    def stats(self) -> dict[str, Any]:
        lags = sorted(self.lags) or [0.0]
        return {
            "loop_lag_p99_ms": lags[int(0.99 * (len(lags) - 1))] * 1000,
            "loop_lag_max_ms": lags[-1] * 1000,
            "gc": {
                str(gen): {"count": len(p), "max_ms": max(p, default=0.0) * 1000}
                for gen, p in self.gc_pauses.items()
            },
        }


async def main(options: argparse.Namespace) -> None:
    import peerwatch

    watch = LoopWatch()
    watch.start()

    peers = 0

    async def handler(conn: Any) -> None:
        nonlocal peers
        first = await conn.recv()
        if not first.startswith(b"PID "):  # a busy-load connection: consume, keep it open
            async for _ in conn:
                pass
            return
        peers += 1
        pid = int(first.split()[1])
        frozen_at: list[float] = []

        def on_verdict(_conn: Any, verdict: Any) -> None:
            emit(
                "verdict",
                pid=pid,
                cause=verdict.cause.value,
                detected_at=verdict.detected_at,
                silent_for=verdict.silent_for,
                local_stall=verdict.local_stall,
                callback_at=time.monotonic(),
                freeze_sent=frozen_at[0] if frozen_at else None,
            )

        conn.add_verdict_callback(on_verdict)
        async for message in conn:
            if message.startswith(b"FREEZE "):
                frozen_at.append(float(message.split()[1]))

    server = await peerwatch.serve(
        handler,
        "127.0.0.1",
        0,
        interval=options.interval,
        timeout=options.timeout,
        backlog=4096,
    )
    emit("ready", port=server.port)
    async for command in stdin_lines():
        if command == "stats":
            emit("stats", peers=peers, connections=len(server.connections), **watch.stats())
        elif command == "reset":
            watch.reset()
            emit("reset")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=600)
    options = parser.parse_args()
    child_setup(options.max_seconds)
    run(main(options), options.uvloop)
