"""Resume benchmark client child: acknowledged throughput, or one outage and its resume.

``python -m bench.resume_client tp plain|resumable HOST PORT --size B --seconds S``
    pipelines messages for S seconds, at most ``--window`` unacknowledged, then
    ``END``; the clock stops when the server application reports the count.

``python -m bench.resume_client cost HOST PORT --size B --replays R``
    first the baseline: a new session that enqueues R messages of B bytes at
    once, and reports (``fresh``) what the server measured. Then it connects
    resumable again, measures the round trip (median of acknowledged sends:
    each returns when the server application took the message), reports
    ``connected`` and waits for ``go`` on stdin. The parent has told the relay
    between them to hold by then (``bench.resume_relay``): the client enqueues
    R messages of B bytes (they get no further than the relay) and reports
    ``enqueued``; the parent has the relay cut the connection with RST, the
    client reports ``lost``, reconnects, resumes, replays, reports ``resumed``,
    waits until the server application took all R and reports what the server
    measured (``bench.resume_server``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import time
from typing import Any

from bench.aiohelpers import loop_name, run, stdin_lines
from bench.floor import END
from bench.procs import child_setup, emit
from bench.resume_server import FAST, REPLAY, REPORT, SETTINGS


def parse_count(reply: bytes) -> int:
    assert reply.startswith(b"COUNT "), reply
    return int(reply.split()[1])


async def connect(kind: str, host: str, port: int, fast: bool = False) -> Any:
    import peerwatch

    settings: dict[str, Any] = dict(FAST if fast else SETTINGS)
    if kind == "resumable":
        settings.update(resume=True, resume_timeout=60.0)
    return await peerwatch.connect(host, port, **settings)


async def throughput(options: argparse.Namespace) -> None:
    conn = await connect(options.kind, options.host, options.port)
    payload = b"x" * options.size
    batch = max(1, min(64, 65536 // options.size))
    outstanding: collections.deque[Any] = collections.deque()
    sent = 0
    emit("start")
    start = time.perf_counter()
    deadline = start + options.seconds
    while True:
        for _ in range(batch):
            outstanding.append(await conn.enqueue(payload))
            if len(outstanding) > options.window:
                await outstanding.popleft()
        sent += batch
        if time.perf_counter() >= deadline:
            break
    while outstanding:
        await outstanding.popleft()
    await conn.enqueue(END)
    consumed = parse_count(await conn.recv())
    elapsed = time.perf_counter() - start
    await conn.close()
    emit("result", sent=sent, consumed=consumed, seconds=elapsed, loop=loop_name())


async def report(conn: Any) -> dict[str, Any]:
    """What the server's handler measured for this session."""
    await conn.enqueue(REPORT)
    timings: dict[str, Any] = json.loads(await asyncio.wait_for(conn.recv(), 30))
    return timings


async def fresh_session(options: argparse.Namespace, payload: bytes) -> None:
    """The baseline: a new session whose client enqueues the R messages at once."""
    conn = await connect("resumable", options.host, options.port, fast=True)
    deliveries = [await conn.enqueue(payload) for _ in range(options.replays)]
    for delivery in deliveries:
        await delivery
    emit("fresh", **await report(conn))
    await conn.close()


async def resume_cost(options: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    payload = REPLAY + b"r" * max(0, options.size - len(REPLAY))
    await fresh_session(options, payload)
    conn = await connect("resumable", options.host, options.port, fast=True)
    events: asyncio.Queue[Any] = asyncio.Queue()
    conn.subscribe(events.put_nowait)
    round_trips = []
    for _ in range(options.probes):
        started = loop.time()
        await conn.send(b"probe")
        round_trips.append(loop.time() - started)
    emit("connected", rtt=statistics.median(round_trips), rtts=round_trips)
    commands = stdin_lines()
    assert await anext(commands) == "go"
    deliveries = [await conn.enqueue(payload) for _ in range(options.replays)]
    emit("enqueued")
    lost = await asyncio.wait_for(events.get(), 30)
    emit("lost", cause=str(lost.verdict.cause), at=lost.at)
    resumed = await asyncio.wait_for(events.get(), 120)
    emit("resumed", outage=resumed.outage, replayed=resumed.replayed, at=resumed.at)
    for delivery in deliveries:
        await delivery
    emit("report", **await report(conn), history=len(conn.history))
    await conn.close()


async def main(options: argparse.Namespace) -> None:
    if options.mode == "tp":
        await throughput(options)
    else:
        await resume_cost(options)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    tp = sub.add_parser("tp")
    tp.add_argument("kind", choices=["plain", "resumable"])
    tp.add_argument("host")
    tp.add_argument("port", type=int)
    tp.add_argument("--size", type=int, default=100)
    tp.add_argument("--seconds", type=float, default=2.0)
    tp.add_argument("--window", type=int, default=1024)
    cost = sub.add_parser("cost")
    cost.add_argument("host")
    cost.add_argument("port", type=int)
    cost.add_argument("--size", type=int, default=1024)
    cost.add_argument("--replays", type=int, default=100)
    cost.add_argument("--probes", type=int, default=20)
    for each in (tp, cost):
        each.add_argument("--uvloop", action="store_true")
        each.add_argument("--max-seconds", type=float, default=300)
    options = parser.parse_args()
    child_setup(options.max_seconds)
    run(main(options), options.uvloop)
