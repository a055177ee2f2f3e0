"""Scale server child: holds up to 100,000+ idle connections with slow heartbeats.

``python -m bench.scale_server floor|peerwatch|hello --connections N [--uvloop]
[--interval 10] [--timeout 30]``

Lifts its own RLIMIT_NOFILE to fit ``N`` sockets, prints ``ready`` with its port;
on the stdin command ``stats`` prints how many connections it holds. After the
command ``report-verdicts`` (peerwatch only) it prints ``verdicts`` events: for
each ended connection the peer's source address and port, the cause, ``silent_for`` and
the ``time.monotonic()`` at which the handler saw the verdict, for the
detection-at-scale phase (not before: 100,000 verdicts at shutdown would only
be noise).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import time
from collections.abc import Callable
from typing import Any, cast

from bench.aiohelpers import loop_name, run, stdin_lines
from bench.floor import PingFloor
from bench.idle_server import server_port
from bench.procs import child_setup, emit, raise_nofile
from bench.rawclients import PW_PONG, peerwatch_hello
from peerwatch.core.frames import PING_FRAME_SIZE, PING_HEAD

BACKLOG = 4096
#: Verdicts are collected for this long, then printed in one line.
REPORT_DELAY = 0.5
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

    def ended(conn: Any, verdict: Any) -> None:
        """Both handler styles' end: counted, and reported once asked to."""
        nonlocal held
        held -= 1
        if options.report_verdicts:  # set by the command, after the idle measurement
            peer = conn.peer  # kept by the connection anyway: no extra memory per connection
            if not pending:
                asyncio.get_running_loop().call_later(REPORT_DELAY, report)
            pending.append(
                {
                    "peer": peer[0] if peer else None,
                    "port": peer[1] if peer else None,
                    "cause": verdict.cause.value,
                    "silent_for": verdict.silent_for,
                    "detected_at": verdict.detected_at,  # loop.time(): CLOCK_MONOTONIC
                    "callback_at": time.monotonic(),
                }
            )

    async def handler(conn: Any) -> None:
        """The coroutine style: one task per connection."""
        nonlocal held
        held += 1
        ended(conn, await conn.wait_closed())

    def echo(conn: Any, message: bytes) -> None:
        conn.enqueue_nowait(message)

    def callback_handler(conn: Any) -> None:
        """The callback style (``--callbacks``): no task per connection."""
        nonlocal held
        held += 1
        conn.set_message_callback(echo)
        conn.add_verdict_callback(ended)

    pending: list[dict[str, Any]] = []

    def report() -> None:
        """One line for a burst of verdicts: writing 1,000 lines one by one into a pipe
        the parent drains would delay the verdicts behind them, and the benchmark
        would measure its own reporting."""
        emit("verdicts", verdicts=pending[:])
        pending.clear()

    server = await peerwatch.serve(
        callback_handler if options.callbacks else handler,
        "127.0.0.1",
        0,
        interval=options.interval,
        timeout=options.timeout,
        backlog=BACKLOG,
        batch_pings=options.batch_pings,
        **({"max_handshakes": options.max_handshakes} if options.max_handshakes else {}),
    )

    def stats() -> int:
        if server.dropped_handshakes:  # real peers dropped as "silent": a storm symptom
            emit("dropped", handshakes=server.dropped_handshakes)
        return held

    return server, stats


class HelloFloor(asyncio.Protocol):
    """The least a peerwatch handshake costs: read the peer's HELLO frame, write ours,
    and answer the PING a confirming peer sends behind it (``bench/storm.py``).

    No options, no heartbeat, no task: the reconnect-storm benchmark's bare
    asyncio server, exchanging the same bytes as ``peerwatch.serve``.
    """

    reply = b""  # the server's HELLO, encoded once
    held = 0
    transport: asyncio.Transport

    def __init__(self) -> None:
        self.buffer: bytes | None = b""
        self.reply_sent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        HelloFloor.held += 1

    def data_received(self, data: bytes) -> None:
        if self.buffer is None:
            return  # past the handshake: later pings are not answered
        buffer = self.buffer = self.buffer + data
        if self.reply_sent:
            if len(buffer) >= 17:  # the confirming PING (u32 12, kind, seq, stamp): PONG
                self.transport.write(buffer[:4] + bytes((PW_PONG,)) + buffer[5:17])
                self.buffer = None
            return
        if len(buffer) >= 5 and len(buffer) >= (end := 5 + int.from_bytes(buffer[:4], "big")):
            self.transport.write(self.reply)
            self.reply_sent = True
            self.buffer = b""
            if len(buffer) > end:
                self.data_received(buffer[end:])

    def connection_lost(self, exc: Exception | None) -> None:
        HelloFloor.held -= 1


class PongFloor(HelloFloor):
    """The HELLO exchange, then each read that is one PING answered with its PONG: the
    least Python that answers peerwatch's clients as they ping (spread over the
    interval), without liveness, timers or verdicts. Not a floor for the targets (it
    detects nothing); it shows how much of peerwatch's cost is the clients' wake-up
    pattern rather than peerwatch's own work."""

    def data_received(self, data: bytes) -> None:
        if self.buffer is not None:
            super().data_received(data)
        elif len(data) == PING_FRAME_SIZE and data[:5] == PING_HEAD:
            self.transport.write(b"".join((data[:4], b"\x05", data[5:])))


async def serve_pong(options: argparse.Namespace) -> tuple[Any, Callable[[], int]]:
    HelloFloor.reply = peerwatch_hello(options.interval, options.timeout)
    server = await asyncio.get_running_loop().create_server(
        PongFloor, "127.0.0.1", 0, backlog=BACKLOG
    )
    return server, lambda: HelloFloor.held


async def serve_hello(options: argparse.Namespace) -> tuple[Any, Callable[[], int]]:
    HelloFloor.reply = peerwatch_hello(options.interval, options.timeout)
    server = await asyncio.get_running_loop().create_server(
        HelloFloor, "127.0.0.1", 0, backlog=BACKLOG
    )
    return server, lambda: HelloFloor.held


async def main(options: argparse.Namespace) -> None:
    starters = {
        "floor": serve_floor,
        "peerwatch": serve_peerwatch,
        "hello": serve_hello,
        "pong": serve_pong,
    }
    profile = cProfile.Profile() if options.profile else None
    server, held = await starters[options.kind](options)
    gc.collect()
    if profile is not None:
        profile.enable()
    emit("ready", port=server_port(server), loop=loop_name())
    async for command in stdin_lines():
        if command == "stats":
            emit("stats", connections=held())
        elif command == "profile" and profile is not None:
            profile.disable()
            text = io.StringIO()
            pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(40)
            emit("profile", text=text.getvalue())
            profile = cProfile.Profile()  # the next "profile" covers the time from now
            profile.enable()
        elif command == "report-verdicts":
            options.report_verdicts = True
            emit("reporting")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["floor", "peerwatch", "hello", "pong"])
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--batch-pings", action="store_true", help="peerwatch: batch_pings=True")
    parser.add_argument(
        "--callbacks", action="store_true", help="peerwatch: a callback handler, no task"
    )
    parser.add_argument("--max-handshakes", type=int, default=0, help="0: the default")
    parser.add_argument("--profile", action="store_true", help="'profile' prints, restarts")
    parser.add_argument("--max-seconds", type=float, default=900)
    options = parser.parse_args()
    options.report_verdicts = False
    child_setup(options.max_seconds)
    raise_nofile(options.connections + FD_MARGIN)
    run(main(options), options.uvloop)
