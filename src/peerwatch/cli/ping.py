"""``peerwatch ping HOST PORT``: ping(8) at the application level, over one peerwatch connection.

Every interval it prints the liveness state of the peer: the round-trip time
of the last reply (PONG) to our PING, how long ago the peer was last heard
from, and the pings sent and replies received so far, which is what ping(8)
counts (the peer's own pings to us are not replies). The summary gives the
loss and rtt min/avg/max over the replies. When the peer dies it prints the
verdict (cause, silence, evidence) and exits 1; the states are:

``alive``    heard from within the interval
``quiet``    nothing heard for more than an interval (a PING is out, no answer yet)
``suspect``  nothing heard for more than half the timeout

Exit status: 0 after ``--count`` ticks or Ctrl-C with the peer alive, 1 when
the peer died (verdict printed), 2 when it could not be reached at all or an
argument is wrong. ``--json``: the same as JSON lines on stdout (docs/JSON.md).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from peerwatch.cli.args import count, port, positive, resolvable_host


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ping",
        help="application-level ping: RTT and liveness each interval, the verdict at the end",
        description=(
            "Connect to a peerwatch server and print, each interval, the application round-trip"
            " time and the liveness state; print the verdict when the peer dies (exit 1)."
        ),
    )
    parser.add_argument("host", type=resolvable_host)
    parser.add_argument("port", type=port)
    parser.add_argument("-i", "--interval", type=positive, default=1.0, help="seconds (default 1)")
    parser.add_argument("-t", "--timeout", type=positive, default=5.0, help="seconds (default 5)")
    parser.add_argument("-c", "--count", type=count, help="stop after this many lines")
    parser.add_argument("--policy", choices=("fixed", "adaptive"), default="fixed")
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout (docs/JSON.md)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from peerwatch.errors import ConfigError

    try:
        return asyncio.run(_ping(args, _Output(args.json)))
    except ConfigError as exc:
        print(f"peerwatch ping: {exc}", file=sys.stderr)
        return 2


class _Output:
    """Each report as a sentence, or (``--json``) as a JSON line with its figures."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, event: str, text: str, **fields: object) -> None:
        if self.as_json:
            from peerwatch.cli.jsonout import emit

            emit(event, **fields)
        else:
            print(text, flush=True)


class _Stats:
    """What ping(8) sums up: pings transmitted, replies received, and the replies' RTTs."""

    def __init__(self) -> None:
        self.ticks = 0
        self.replies_seen = 0
        self.rtts: list[float] = []

    def new_reply(self, liveness: Any) -> float | None:
        """The RTT of the newest reply if one came since the last look (ping(8)'s time=)."""
        if liveness.pongs_received == self.replies_seen or liveness.rtt_sample is None:
            return None
        self.replies_seen = liveness.pongs_received
        sample: float = liveness.rtt_sample
        self.rtts.append(sample)
        return sample

    def report(self, output: _Output, target: str, conn: Any, outcome: str) -> None:
        sent, received = conn.pings_sent, conn.liveness.pongs_received
        loss = 100.0 * (sent - received) / sent if sent else 0.0
        figures: dict[str, float | None] = {"min": None, "avg": None, "max": None}
        rtt = "rtt n/a"
        if self.rtts:
            low, mean = min(self.rtts) * 1e3, sum(self.rtts) / len(self.rtts) * 1e3
            high = max(self.rtts) * 1e3
            figures = {"min": round(low, 3), "avg": round(mean, 3), "max": round(high, 3)}
            rtt = f"rtt min/avg/max = {low:.3f}/{mean:.3f}/{high:.3f} ms"
        output(
            "summary",
            f"--- {target} peerwatch ping statistics ---\n"
            f"{sent} pings transmitted, {received} received, {loss:.0f}% loss\n"
            f"{rtt}\n{outcome}",
            target=target,
            transmitted=sent,
            received=received,
            loss_percent=round(loss, 1),
            rtt_ms=figures,
            outcome=outcome,
        )


async def _ping(args: argparse.Namespace, output: _Output) -> int:
    import asyncio
    import signal

    import peerwatch

    target = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
    try:
        conn = await peerwatch.connect(
            args.host, args.port, interval=args.interval, timeout=args.timeout, policy=args.policy
        )
    except peerwatch.PeerDead as dead:
        output(
            "unreachable",
            f"peerwatch ping: {target}: {dead.verdict.describe()}",
            target=target,
            cause=dead.verdict.cause.value,
            detail=dead.verdict.detail,
        )
        return 2
    hello = conn.peer_hello
    assert hello is not None
    output(
        "start",
        f"PEERWATCH PING {target}: interval {args.interval} s, timeout {args.timeout} s;"
        f" peer: interval {hello.interval} s, timeout {hello.timeout} s,"
        f" incarnation {hello.incarnation:016x}",
        target=target,
        interval=args.interval,
        timeout=args.timeout,
        peer={
            "interval": hello.interval,
            "timeout": hello.timeout,
            "incarnation": f"{hello.incarnation:016x}",
        },
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
            _tick(output, conn, args, target, stats, now=loop.time())
    finally:
        stopping.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    verdict = conn.verdict
    if verdict is None:
        await conn.close("ping done")
        stats.report(output, target, conn, "peer alive")
        return 0
    output(
        "verdict",
        f"{target}: verdict {verdict.describe()} (peer silent for {verdict.silent_for:.3f} s)",
        target=target,
        cause=verdict.cause.value,
        detail=verdict.detail,
        silent_for=round(verdict.silent_for, 6),
    )
    stats.report(output, target, conn, f"verdict {verdict.cause.value}")
    return 1


def _tick(
    output: _Output, conn: Any, args: argparse.Namespace, target: str, stats: _Stats, *, now: float
) -> None:
    silent = conn.liveness.silent_for(now)
    if silent > args.timeout / 2:
        state = "suspect"
    elif silent > args.interval:
        state = "quiet"
    else:
        state = "alive"
    rtt = stats.new_reply(conn.liveness)
    rtt_text = "rtt=n/a" if rtt is None else f"rtt={rtt * 1e3:.3f} ms"
    sent, replies = conn.pings_sent, conn.liveness.pongs_received
    output(
        "tick",
        f"{target}: seq={stats.ticks} state={state} {rtt_text}"
        f" heard {silent:.2f} s ago, pings {sent} sent / {replies} replies",
        target=target,
        seq=stats.ticks,
        state=state,
        rtt_ms=None if rtt is None else round(rtt * 1e3, 3),
        silent_for=round(silent, 6),
        pings_sent=sent,
        replies=replies,
    )
