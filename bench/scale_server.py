"""Scale server child: holds up to 100,000+ idle connections with slow heartbeats.

``python -m bench.scale_server floor|peerwatch --connections N [--uvloop]
[--interval 10] [--timeout 30]``

Lifts its own RLIMIT_NOFILE to fit ``N`` sockets, prints ``ready`` with its port;
on the stdin command ``stats`` prints how many connections it holds. After the
command ``report-verdicts`` (peerwatch only) it prints one ``verdict`` event per
ended connection with the peer's source address, the cause, ``silent_for`` and
the ``time.monotonic()`` of the verdict, for the detection-at-scale phase (not
before: 100,000 verdicts at shutdown would only be noise).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

from bench.aiohelpers import loop_name, run, stdin_lines
from bench.floor import PingFloor
from bench.idle_server import server_port
from bench.procs import child_setup, emit, raise_nofile

BACKLOG = 4096
#: Descriptors beyond the connections: listener, pipes, event loop, imports.
FD_MARGIN = 4096


async def serve_floor(options: argparse.Namespace) -> tuple[Any, Callable[[], int]]:
    floor = PingFloor(options.interval, options.timeout)
    floor.start()
    server = await asyncio.get_running_loop().create_server(
        floor.protocol, "127.0.0.1", 0, backlog=BACKLOG
    )
    return server, lambda: len(floor.connections)


async def serve_peerwatch(options: argparse.Namespace) -> tuple[Any, Callable[[], int]]:
    import peerwatch

    held = 0

    async def handler(conn: Any) -> None:
        nonlocal held
        held += 1
        try:
            verdict = await conn.wait_closed()
        finally:
            held -= 1
        if options.report_verdicts:  # set by the command, after the idle measurement
            peer = conn.peer  # kept by the connection anyway: no extra memory per connection
            emit(
                "verdict",
                peer=peer[0] if peer else None,
                cause=verdict.cause.value,
                silent_for=verdict.silent_for,
                callback_at=time.monotonic(),
            )

    server = await peerwatch.serve(
        handler,
        "127.0.0.1",
        0,
        interval=options.interval,
        timeout=options.timeout,
        backlog=BACKLOG,
    )
    return server, lambda: held


async def main(options: argparse.Namespace) -> None:
    starters = {"floor": serve_floor, "peerwatch": serve_peerwatch}
    server, held = await starters[options.kind](options)
    gc.collect()
    emit("ready", port=server_port(server), loop=loop_name())
    async for command in stdin_lines():
        if command == "stats":
            emit("stats", connections=held())
        elif command == "report-verdicts":
            options.report_verdicts = True
            emit("reporting")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["floor", "peerwatch"])
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=900)
    options = parser.parse_args()
    options.report_verdicts = False
    child_setup(options.max_seconds)
    raise_nofile(options.connections + FD_MARGIN)
    run(main(options), options.uvloop)
