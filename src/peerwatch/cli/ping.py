"""``peerwatch ping HOST PORT``: ping(8) at the application level, over one peerwatch connection.

Every interval it prints the liveness state of the peer: the smoothed
round-trip time of PING/PONG, how long ago the peer was last heard from, and
the pings so far. When the peer dies it prints the verdict (cause, silence,
evidence) and exits 1; the states are:

``alive``    heard from within the interval
``quiet``    nothing heard for more than an interval (a PING is out, no answer yet)
``suspect``  nothing heard for more than half the timeout

Exit status: 0 after ``--count`` ticks or Ctrl-C with the peer alive, 1 when
the peer died (verdict printed), 2 when it could not be reached at all.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ping",
        help="application-level ping: RTT and liveness each interval, the verdict at the end",
        description=(
            "Connect to a peerwatch server and print, each interval, the application round-trip"
            " time and the liveness state; print the verdict when the peer dies (exit 1)."
        ),
    )
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("-i", "--interval", type=float, default=1.0, help="seconds (default 1)")
    parser.add_argument("-t", "--timeout", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("-c", "--count", type=int, help="stop after this many lines")
    parser.add_argument("--policy", choices=("fixed", "adaptive"), default="fixed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from peerwatch.errors import ConfigError

    try:
        return asyncio.run(_ping(args))
    except ConfigError as exc:
        print(f"peerwatch ping: {exc}", file=sys.stderr)
        return 2


class _Stats:
    def __init__(self) -> None:
        self.ticks = 0
        self.rtts: list[float] = []

    def summary(self, target: str, conn: Any, outcome: str) -> str:
        rtt = "rtt n/a"
        if self.rtts:
            low, mean, high = min(self.rtts), sum(self.rtts) / len(self.rtts), max(self.rtts)
            rtt = f"rtt min/avg/max = {low * 1e3:.3f}/{mean * 1e3:.3f}/{high * 1e3:.3f} ms"
        return (
            f"--- {target} peerwatch ping statistics ---\n"
            f"{self.ticks} ticks, {conn.pings_sent} pings sent, {conn.pings_received} received,"
            f" {rtt}, {outcome}"
        )


async def _ping(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    import peerwatch

    target = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
    try:
        conn = await peerwatch.connect(
            args.host, args.port, interval=args.interval, timeout=args.timeout, policy=args.policy
        )
    except peerwatch.PeerDead as dead:
        print(f"peerwatch ping: {target}: {dead.verdict.describe()}", flush=True)
        return 2
    hello = conn.peer_hello
    assert hello is not None
    print(
        f"PEERWATCH PING {target}: interval {args.interval} s, timeout {args.timeout} s;"
        f" peer: interval {hello.interval} s, timeout {hello.timeout} s,"
        f" incarnation {hello.incarnation:016x}",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    stats = _Stats()
    closed = asyncio.ensure_future(conn.wait_closed())
    stopping = asyncio.ensure_future(stop.wait())
    start = loop.time()
    try:
        while args.count is None or stats.ticks < args.count:
            # half an interval off the ping grid, so a line shows the answer to the last ping
            next_tick = start + (stats.ticks + 0.5) * args.interval
            await asyncio.wait(
                {closed, stopping},
                timeout=max(0.0, next_tick - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if closed.done() or stopping.done():
                break
            stats.ticks += 1
            print(_line(conn, args, target, stats, loop.time()), flush=True)
    finally:
        stopping.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    verdict = conn.verdict
    if verdict is None:
        await conn.close("ping done")
        print(stats.summary(target, conn, "peer alive"), flush=True)
        return 0
    print(
        f"{target}: verdict {verdict.describe()} (peer silent for {verdict.silent_for:.3f} s)",
        flush=True,
    )
    print(stats.summary(target, conn, f"verdict {verdict.cause.value}"), flush=True)
    return 1


def _line(conn: Any, args: argparse.Namespace, target: str, stats: _Stats, now: float) -> str:
    silent = conn.liveness.silent_for(now)
    if silent > args.timeout / 2:
        state = "suspect"
    elif silent > args.interval:
        state = "quiet"
    else:
        state = "alive"
    rtt = conn.rtt
    if rtt is not None:
        stats.rtts.append(rtt)
        rtt_text = f"rtt={rtt * 1e3:.3f} ms"
    else:
        rtt_text = "rtt=n/a"
    return (
        f"{target}: seq={stats.ticks} state={state} {rtt_text}"
        f" heard {silent:.2f} s ago, pings {conn.pings_sent} sent / {conn.pings_received} received"
    )
