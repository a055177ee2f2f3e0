"""Scale load generator: opens N connections from given loopback source addresses.

``python -m bench.scale_clients floor|peerwatch PORT N --sources 127.0.0.2,127.0.0.3
[--interval 10] [--timeout 30] [--go]``

One destination (127.0.0.1:PORT) gives each source address about 28,000
ephemeral ports (``ip_local_port_range``), so 100,000 connections need several
sources; 127.0.0.0/8 is all local, and using 127.0.0.2 and up leaves
127.0.0.1's ports to everyone else on the machine. Connections are spread
round-robin over the sources.

It keeps its side alive with the least CPU: for the floor it echoes pings
(``EchoProtocol``); for peerwatch it is ``RawPeerwatchClient`` pinging once per
interval from one shared timer. Commands on stdin: ``stats`` (pings so far) and
``freeze``: send one last PING on every connection, print ``freezing`` with the
``time.monotonic()`` taken after the last write and after each connection's
(``written``, by local port), then stop this process with
SIGSTOP (the parent's ``Child.stop`` still ends it: SIGKILL needs no cooperation).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from bench.aiohelpers import run, stdin_lines
from bench.floor import EchoProtocol
from bench.idle_client import keep_pinging, open_all
from bench.procs import child_setup, emit
from bench.rawclients import HandshakeCounter, RawPeerwatchClient, peerwatch_hello

HOST = "127.0.0.1"


async def main(options: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    sources = itertools.cycle(options.sources.split(","))
    lost: dict[str, int] = {}  # peers that never got in, by why
    port = options.port
    one: Callable[[], Any]
    if options.kind == "floor":

        async def one() -> Any:
            return await loop.create_connection(
                EchoProtocol, HOST, port, local_addr=(next(sources), 0)
            )

        pings = lambda: EchoProtocol.pings  # noqa: E731
    else:
        RawPeerwatchClient.hello = peerwatch_hello(options.interval, options.timeout)
        RawPeerwatchClient.confirm = options.confirm

        async def one() -> Any:
            protocol: RawPeerwatchClient
            try:
                _, protocol = await loop.create_connection(
                    RawPeerwatchClient, HOST, port, local_addr=(next(sources), 0)
                )
                await protocol.ready
            except OSError as exc:  # the server dropped it (or never took it): counted
                why = str(exc).split(": ", 1)[-1] if isinstance(exc, ConnectionError) else exc
                lost[str(why)[:80]] = lost.get(str(why)[:80], 0) + 1
                return None
            return protocol

        pings = lambda: HandshakeCounter.pings  # noqa: E731

    commands = stdin_lines()
    if options.go:
        emit("armed")
        async for command in commands:
            if command == "go":
                break
    started = time.monotonic()
    held = [conn for conn in await open_all(options.count, one) if conn is not None]
    done = time.monotonic()
    emit(
        "ready",
        connections=len(held),
        seconds=done - started,
        started=started,
        at=done,
        lost=lost,
    )
    if options.kind == "peerwatch":
        keep_pinging(held, options.interval)
    async for command in commands:
        if command == "stats":
            emit("stats", pings=pings(), at=time.monotonic())
        elif command == "freeze" and options.kind == "peerwatch":
            stamp = time.monotonic_ns() // 1000
            written: dict[int, float] = {}  # local port -> when its last PING was written
            for conn in held:
                conn.ping(stamp)  # written to the kernel now: the socket's buffer is empty
                written[conn.transport.get_extra_info("sockname")[1]] = time.monotonic()
            emit("freezing", at=time.monotonic(), written=written)
            os.kill(os.getpid(), signal.SIGSTOP)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["floor", "peerwatch"])
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--sources", required=True, help="comma-separated 127.x.y.z addresses")
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--go", action="store_true", help="open only after a 'go' on stdin")
    parser.add_argument(
        "--confirm", action="store_true", help="ready at the PONG to a PING sent with HELLO"
    )
    parser.add_argument("--max-seconds", type=float, default=900)
    options = parser.parse_args()
    child_setup(options.max_seconds)
    run(main(options), use_uvloop=True)
