"""A relay on loopback for the resume benchmark: adds delay, holds, and cuts with RST.

``python -m bench.resume_relay TARGET_PORT [--delay-ms D]``

For each accepted client it connects to ``127.0.0.1:TARGET_PORT`` and forwards
bytes both ways, each chunk ``D`` ms after it arrived (order kept: chunks of
one direction leave in arrival order), so the application round trip through
it grows by 2 D. This kernel has no netem (``sch_netem`` is not built), hence a
relay; it terminates TCP, so the delay is the application's round trip, not
the kernel's. Commands on stdin: ``hold`` (stop forwarding client -> server:
a partition in one direction, bytes pile up here), ``cut`` (RST both halves of
every connection, with SO_LINGER 0, and drop what was held or delayed).
It reports ``ready`` (its port) and answers each command with ``done``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct

from bench.aiohelpers import run, stdin_lines
from bench.procs import child_setup, emit

LINGER_RST = struct.pack("ii", 1, 0)


class Half(asyncio.Protocol):
    """One side of a relayed connection; ``peer`` is the other side's ``Half``."""

    def __init__(self, relay: Relay, upstream: bool) -> None:
        self.relay = relay
        self.upstream = upstream  # True: the connection to the server
        self.peer: Half | None = None
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # arrived before the other side was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        held = not self.upstream and self.relay.holding
        if self.peer is None or self.peer.transport is None or held:
            self.pending.append(data)
            return
        self.relay.forward(self.peer, data)

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for data in pending:
            self.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.relay.halves:
            self.relay.halves.remove(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def reset(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        self.transport.abort()
        self.pending.clear()


class Relay:
    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.holding = False
        self.halves: list[Half] = []
        self.generation = 0  # bumped by cut: delayed chunks of a cut connection are dropped
        self.connecting: set[asyncio.Task[None]] = set()

    def forward(self, to: Half, data: bytes) -> None:
        transport = to.transport
        assert transport is not None
        if not self.delay:
            transport.write(data)
            return
        loop = asyncio.get_running_loop()
        generation = self.generation
        loop.call_at(loop.time() + self.delay, self._deliver, transport, data, generation)

    def _deliver(self, transport: asyncio.Transport, data: bytes, generation: int) -> None:
        if generation == self.generation and not transport.is_closing():
            transport.write(data)

    def accepted(self) -> Half:
        client = Half(self, upstream=False)
        self.halves.append(client)
        task = asyncio.ensure_future(self._connect_upstream(client))
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)
        return client

    async def _connect_upstream(self, client: Half) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, server = await loop.create_connection(
                lambda: Half(self, upstream=True), "127.0.0.1", self.target_port
            )
        except OSError:
            client.reset()
            return
        assert isinstance(server, Half)
        self.halves.append(server)
        client.peer, server.peer = server, client
        client.flush()

    def hold(self) -> None:
        self.holding = True

    def cut(self) -> None:
        self.generation += 1
        halves, self.halves = self.halves, []
        for half in halves:
            half.reset()
        self.holding = False


async def main(options: argparse.Namespace) -> None:
    relay = Relay(options.target_port, options.delay_ms / 1000)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(relay.accepted, "127.0.0.1", 0)
    emit("ready", port=server.sockets[0].getsockname()[1])
    async for command in stdin_lines():
        if command == "hold":
            relay.hold()
        elif command == "cut":
            relay.cut()
        emit("done", command=command)
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("target_port", type=int)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--max-seconds", type=float, default=300)
    options = parser.parse_args()
    child_setup(options.max_seconds)
    run(main(options), False)
