"""Idle server child: holds connections and watches them with 1 s heartbeats.

``python -m bench.idle_server floor|websockets|keepalive|peerwatch [--uvloop]``

Prints ``ready`` with its port; on the stdin command ``stats`` prints how many
connections it holds (and, where it knows, pings sent and pongs received).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
from collections.abc import Callable
from typing import Any

from bench.aiohelpers import loop_name, run, stdin_lines
from bench.floor import KeepaliveOnly, PingFloor
from bench.procs import child_setup, emit

INTERVAL = 1.0
TIMEOUT = 5.0
BACKLOG = 4096


async def serve_floor() -> tuple[Any, Callable[[], dict[str, int]]]:
    floor = PingFloor(INTERVAL, TIMEOUT)
    floor.start()
    server = await asyncio.get_running_loop().create_server(
        floor.protocol, "127.0.0.1", 0, backlog=BACKLOG
    )

    def stats() -> dict[str, int]:
        return {
            "connections": len(floor.connections),
            "pings_sent": floor.pings_sent,
            "pongs_received": floor.pongs_received,
        }

    return server, stats


async def serve_keepalive() -> tuple[Any, Callable[[], dict[str, int]]]:
    server = await asyncio.get_running_loop().create_server(
        KeepaliveOnly, "127.0.0.1", 0, backlog=BACKLOG
    )
    return server, lambda: {"connections": KeepaliveOnly.connections}


async def serve_websockets() -> tuple[Any, Callable[[], dict[str, int]]]:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    server = await serve(
        handler,
        "127.0.0.1",
        0,
        ping_interval=INTERVAL,
        ping_timeout=TIMEOUT,
        compression=None,
        backlog=BACKLOG,
    )
    return server, lambda: {"connections": len(server.connections)}


async def serve_peerwatch() -> tuple[Any, Callable[[], dict[str, int]]]:
    import peerwatch

    held = 0

    async def handler(conn: Any) -> None:
        nonlocal held
        held += 1
        try:
            await conn.wait_closed()
        finally:
            held -= 1

    server = await peerwatch.serve(handler, "127.0.0.1", 0, interval=INTERVAL, timeout=TIMEOUT)
    return server, lambda: {"connections": held}


def server_port(server: Any) -> int:
    port = getattr(server, "port", None)
    if isinstance(port, int):
        return port
    return int(server.sockets[0].getsockname()[1])


async def main(kind: str) -> None:
    starters = {
        "floor": serve_floor,
        "keepalive": serve_keepalive,
        "websockets": serve_websockets,
        "peerwatch": serve_peerwatch,
    }
    server, stats = await starters[kind]()
    gc.collect()
    emit("ready", port=server_port(server), loop=loop_name())
    async for command in stdin_lines():
        if command == "stats":
            emit("stats", **stats())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["floor", "websockets", "keepalive", "peerwatch"])
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=600)
    options = parser.parse_args()
    child_setup(options.max_seconds)
    run(main(options.kind), options.uvloop)  # SIGTERM's default action ends it
