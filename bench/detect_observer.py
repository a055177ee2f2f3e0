"""The observer of the detection benchmark: a peerwatch server that reports every verdict.

``python -m bench.detect_observer --interval I --timeout T [--uvloop]``

Each peer introduces itself with ``PID <pid>``; a frozen peer's last message is
``FREEZE <monotonic time>``. For every verdict the observer prints the peer's
pid, the verdict's own ``detected_at`` and ``silent_for``, the wall-clock
``time.monotonic()`` taken inside the verdict callback, and the freeze stamp.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.aiohelpers import run, stdin_lines
from bench.procs import child_setup, emit


async def main(options: argparse.Namespace) -> None:
    import peerwatch

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
            emit("stats", peers=peers, connections=len(server.connections))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=600)
    options = parser.parse_args()
    child_setup(options.max_seconds)
    run(main(options), options.uvloop)
