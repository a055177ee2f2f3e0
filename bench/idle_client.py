"""Idle load generator: opens N connections to an idle server and keeps them alive.

``python -m bench.idle_client KIND PORT N [--peerwatch-client raw|library] [--go]``

Runs on uvloop (it is the load, not the thing measured). Prints ``ready`` once
all N connections have finished their handshake; on ``stats`` prints how many
pings it has answered so far (the server's heartbeats really flowed). With
``--go`` it prints ``armed`` and waits for a ``go`` line before connecting, so
several load generators can start at the same instant (CLOCK_MONOTONIC stamps
in ``ready`` are comparable across processes).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from bench.aiohelpers import run, stdin_lines
from bench.floor import EchoProtocol, IdleProtocol
from bench.procs import child_setup, emit
from bench.rawclients import (
    HandshakeCounter,
    RawPeerwatchClient,
    RawWebSocketClient,
    peerwatch_hello,
)

HOST = "127.0.0.1"
INTERVAL = 1.0  # the heartbeat interval of every setup
CONCURRENCY = 256


async def open_all(count: int, one: Callable[[], Any]) -> list[Any]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def guarded() -> Any:
        async with gate:
            return await one()

    return list(await asyncio.gather(*(guarded() for _ in range(count))))


def keep_pinging(connections: list[RawPeerwatchClient], every: float, tick: float = 0.01) -> None:
    """Each connection PINGs once per ``every`` s, spread evenly over ticks of one timer,
    unless the server pinged it within ``every`` s (rule 6: a server with ``batch_pings``
    pings ahead of its peers, and a peerwatch client then never pings)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    done = 0  # pings sent so far; the schedule is absolute, so it never drifts behind

    def ping_some() -> None:
        nonlocal done
        now = loop.time()
        due = int((now - started) / every * len(connections)) + 1
        stamp = time.monotonic_ns() // 1000
        quiet_since = time.monotonic() - every
        while done < due:
            conn = connections[done % len(connections)]
            if not conn.transport.is_closing() and conn.pinged_at < quiet_since:
                conn.ping(stamp)
            done += 1
        loop.call_at(now + tick, ping_some)

    loop.call_soon(ping_some)


def keep_busy(connections: list[RawPeerwatchClient], every: float, tick: float = 0.01) -> None:
    """Each connection sends one 100-byte message per ``every`` s, spread over ticks."""
    loop = asyncio.get_running_loop()
    payload = b"b" * 100
    started = loop.time()
    done = 0  # messages sent so far, on an absolute schedule

    def send_some() -> None:
        nonlocal done
        now = loop.time()
        due = int((now - started) / every * len(connections)) + 1
        while done < due:
            conn = connections[done % len(connections)]
            if not conn.transport.is_closing():
                conn.send_data(payload)
            done += 1
        loop.call_at(now + tick, send_some)

    loop.call_soon(send_some)


async def main(options: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    kind, port = options.kind, options.port
    pings: Callable[[], int]

    if kind in ("floor", "keepalive"):
        factory: Any = EchoProtocol if kind == "floor" else IdleProtocol

        async def one() -> Any:
            return await loop.create_connection(factory, HOST, port)

        pings = lambda: EchoProtocol.pings  # noqa: E731
    elif kind == "websockets" or options.peerwatch_client == "raw":
        if kind == "peerwatch":
            RawPeerwatchClient.hello = peerwatch_hello(1.0, 5.0)

        async def one() -> Any:
            protocol: HandshakeCounter
            if kind == "websockets":
                _, protocol = await loop.create_connection(
                    lambda: RawWebSocketClient(HOST, port), HOST, port
                )
            else:
                _, protocol = await loop.create_connection(RawPeerwatchClient, HOST, port)
            await protocol.ready
            return protocol

        pings = lambda: HandshakeCounter.pings  # noqa: E731
    else:
        import peerwatch

        async def one() -> Any:
            return await peerwatch.connect(HOST, port, interval=1.0, timeout=5.0)

        pings = lambda: -1  # noqa: E731  (the library does not expose a ping count)

    commands = stdin_lines()
    if options.go:  # several load generators start together on the parent's word
        emit("armed")
        async for command in commands:
            if command == "go":
                break
    started = time.monotonic()
    held = await open_all(options.count, one)
    done = time.monotonic()
    emit("ready", connections=len(held), seconds=done - started, started=started, at=done)
    if kind == "peerwatch" and options.peerwatch_client == "raw":
        keep_pinging(held, INTERVAL)
        if options.send_every:
            keep_busy(held, options.send_every)
    async for command in commands:
        if command == "stats":
            emit("stats", pings=pings(), at=time.monotonic())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["floor", "websockets", "keepalive", "peerwatch"])
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--peerwatch-client", choices=["raw", "library"], default="raw")
    parser.add_argument("--send-every", type=float, default=0.0)
    parser.add_argument("--go", action="store_true", help="open only after a 'go' on stdin")
    parser.add_argument("--max-seconds", type=float, default=600)
    options = parser.parse_args()
    child_setup(options.max_seconds)
    run(main(options), use_uvloop=True)
