"""Per-heartbeat cost of an idle ``batch_pings`` server connection, Python alone.

``python -m bench.heartbeat_cost [CONNECTIONS] [BEATS] [--uvloop]`` (defaults 2,000 and 20)

``CONNECTIONS`` server ``Connection`` objects on stub transports that keep only the last
write (no socket, no peer process) are handed a client's HELLO; then, ``BEATS`` times, the
loop's shared ``TimerQueue`` runs the grid point where all of them are due (each writes its
PING) and each is fed the PONG its peer would answer, echoing that PING. What is measured
is what the server does per connection per heartbeat in Python: the timer pass,
``on_timer`` and ``take_ping``, ``buffer_updated`` and ``take_pong``. The clock is fake
(every beat is exactly on time), so the machine's speed moves the time, not the path.

Under ``valgrind --tool=callgrind`` the difference of two BEATS counts, over
CONNECTIONS x their difference, gives instructions per heartbeat (bench/scale_analysis.md):
the idle cost that the system calls do not share, measured the same on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.rawclients import peerwatch_hello
from bench.tp_enqueue import SwallowingTransport
from peerwatch.aio import timers
from peerwatch.aio.connection import Connection
from peerwatch.aio.sockets import recv_view
from peerwatch.core.config import Config
from peerwatch.core.frames import Kind

INTERVAL, TIMEOUT = 10.0, 30.0
PONG = bytes((Kind.PONG,))  # the kind byte a PONG has where its PING had PING's


class EchoedTransport(SwallowingTransport):
    """Keeps the last frame written: the PING its peer answers with a PONG echoing it."""

    last = b""

    def write(self, data: bytes) -> None:
        self.last = data


class FakeClockLoop:
    """The event loop with a clock the benchmark sets: every beat runs exactly on time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.now = loop.time()

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loop, name)


def run(connections: int, beats: int, uvloop: bool = False) -> dict[str, float]:
    """Seconds per connection per heartbeat over ``beats`` grid points; the PINGs written
    and the PONGs timed, over every connection (each heartbeat one of each)."""
    if uvloop:
        import uvloop as uv

        real = uv.new_event_loop()
    else:
        real = asyncio.new_event_loop()
    loop: Any = FakeClockLoop(real)
    queue = timers._queues[loop] = timers.TimerQueue(loop)
    config = Config(interval=INTERVAL, timeout=TIMEOUT, batch_pings=True)
    view = recv_view()
    hello = peerwatch_hello(INTERVAL, TIMEOUT)
    conns, transports = [], []
    for _ in range(connections):
        conn = Connection(config, "server", loop)
        transport = EchoedTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        view[: len(hello)] = hello
        conn.buffer_updated(len(hello))
        transport.last = b""  # our HELLO: not a PING to answer
        transports.append(transport)
        conns.append(conn)
    spent = 0.0
    done = 0
    while done < beats:
        loop.now = queue._heap[0]  # the next grid point (or a settle-only pass)
        sent = conns[0]._protocol.pings_sent
        start = time.perf_counter()
        queue._run()
        loop.now += 0.0002  # the PONGs come back a loopback round trip later
        for conn, transport in zip(conns, transports, strict=True):
            ping, transport.last = transport.last, b""
            if ping:  # the peer's answer: the PING with its kind byte changed
                view[: len(ping)] = b"".join((ping[:4], PONG, ping[5:]))
                conn.buffer_updated(len(ping))
        spent += time.perf_counter() - start
        if conns[0]._protocol.pings_sent != sent:
            done += 1
    real.close()
    return {
        "seconds": spent / (connections * beats),
        "pings": sum(conn._protocol.pings_sent for conn in conns),
        "pongs": sum(conn._protocol.liveness.pongs_received for conn in conns),
        "verdicts": sum(conn.verdict is not None for conn in conns),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.heartbeat_cost", description=__doc__)
    parser.add_argument("connections", nargs="?", type=int, default=2000)
    parser.add_argument("beats", nargs="?", type=int, default=20)
    parser.add_argument("--uvloop", action="store_true")
    options = parser.parse_args(argv)
    if options.connections < 1 or options.beats < 1:
        parser.error("connections and beats must be at least 1")
    result = run(options.connections, options.beats, options.uvloop)
    print(
        f"{result['seconds'] * 1e9:.0f} ns per connection per heartbeat"
        f" ({result['pings']:.0f} PINGs, {result['pongs']:.0f} PONGs timed,"
        f" {result['verdicts']:.0f} verdicts)"
    )


if __name__ == "__main__":
    main()
