"""Throughput server child: consumes messages in the application, reports the count on END.

``python -m bench.tp_server floor|websockets|peerwatch [--uvloop]``

Every implementation hands each message to application code (a consumer that
counts it). When a message starting with ``END`` arrives, the server replies
with ``b"COUNT <n>"``, the number of messages the application consumed on that
connection, so the load generator knows when everything was consumed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from bench.aiohelpers import loop_name, run
from bench.floor import END, FramedReceiver
from bench.procs import child_setup, emit

MAX_MESSAGE = 2 * 1024 * 1024


async def serve_floor() -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    consumers: set[asyncio.Task[None]] = set()

    def connected() -> FramedReceiver:
        protocol = FramedReceiver()
        task = loop.create_task(consume_floor(protocol))
        consumers.add(task)
        task.add_done_callback(consumers.discard)
        return protocol

    return await loop.create_server(connected, "127.0.0.1", 0, backlog=1024)


async def consume_floor(protocol: FramedReceiver) -> None:
    count = 0
    while True:
        message = await protocol.recv()
        if message is None:
            return
        if message.startswith(END):
            protocol.send(b"COUNT %d" % count)
            count = 0
            continue
        count += 1


async def serve_websockets() -> Any:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        count = 0
        async for message in ws:
            assert isinstance(message, bytes)
            if message.startswith(END):
                await ws.send(b"COUNT %d" % count)
                count = 0
                continue
            count += 1

    return await serve(
        handler,
        "127.0.0.1",
        0,
        max_size=MAX_MESSAGE,
        compression=None,
        ping_interval=1,
        max_queue=1024,
    )


async def serve_peerwatch() -> Any:
    import peerwatch

    async def handler(conn: Any) -> None:
        count = 0
        try:
            async for message in conn:
                if message.startswith(END):
                    await conn.enqueue(b"COUNT %d" % count)
                    count = 0
                    continue
                count += 1
        except peerwatch.PeerwatchError:
            pass

    return await peerwatch.serve(
        handler, "127.0.0.1", 0, interval=1.0, timeout=5.0, max_frame=MAX_MESSAGE
    )


def server_port(server: Any) -> int:
    port = getattr(server, "port", None)
    if isinstance(port, int):
        return port
    return int(server.sockets[0].getsockname()[1])


async def main(kind: str) -> None:
    starters = {"floor": serve_floor, "websockets": serve_websockets, "peerwatch": serve_peerwatch}
    server = await starters[kind]()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    emit("ready", port=server_port(server), loop=loop_name())
    await stop.wait()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["floor", "websockets", "peerwatch"])
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=600)
    options = parser.parse_args()
    child_setup(options.max_seconds)
    run(main(options.kind), options.uvloop)
