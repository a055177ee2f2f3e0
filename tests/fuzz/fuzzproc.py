"""The processes of the wire fuzz suite: an echo server under attack, and its healthy canary.

    python fuzzproc.py aio    [--max-connections N]   peerwatch.serve echo
    python fuzzproc.py sync   [--max-connections N]   peerwatch.sync.serve echo (a thread each)
    python fuzzproc.py canary --port P                echoes a message every PERIOD seconds

A server prints ``PORT <n>`` once listening, logs at INFO to stderr (the test
reads that log for tracebacks and forged lines), and for every connection its
handler served prints ``END rtt=<seconds|None> cause=<cause|None>`` to stdout.
The canary prints ``ROUND <i> <latency>`` per echo and ``VERDICT <description>``
if its connection ever ends.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time

import peerwatch
from peerwatch import sync
from peerwatch.core.config import Config

#: The server's settings: a short handshake timeout so silent sockets go quickly, and
#: room for the 1 MiB messages of the never-reading client.
SERVER = Config(interval=0.2, timeout=2.0, handshake_timeout=1.0, max_message=2 << 20)
#: The canary's heartbeat: tight, so a server loop held for a second shows as a verdict.
CANARY_INTERVAL = 0.1
CANARY_TIMEOUT = 1.0
#: Seconds between two canary echoes.
PERIOD = 0.05


def ended(
    peer: tuple[str, int] | None, rtt: float | None, verdict: peerwatch.Verdict | None
) -> None:
    port = peer[1] if peer is not None else None
    cause = verdict.cause.value if verdict is not None else None
    print(f"END peer={port} rtt={rtt} cause={cause}", flush=True)


async def echo(conn: peerwatch.Connection) -> None:
    try:
        async for message in conn:
            await conn.enqueue(message)
    finally:
        ended(conn.peer, conn.rtt, conn.verdict)


def sync_echo(conn: sync.Connection) -> None:
    try:
        for message in conn:
            conn.enqueue(message)
    finally:
        ended(conn.peer, conn.rtt, conn.verdict)


async def serve_aio(max_connections: int | None) -> None:
    server = await peerwatch.serve(
        echo, "127.0.0.1", 0, config=SERVER, max_connections=max_connections
    )
    print("PORT", server.port, flush=True)
    await asyncio.Event().wait()


def serve_sync(max_connections: int | None) -> None:
    # config= reaches peerwatch.serve: timeout= on sync.serve is the call's own wait
    server = sync.serve(sync_echo, "127.0.0.1", 0, config=SERVER, max_connections=max_connections)
    print("PORT", server.port, flush=True)
    server.serve_forever()


async def canary(port: int) -> None:
    conn = await peerwatch.connect(
        "127.0.0.1", port, interval=CANARY_INTERVAL, timeout=CANARY_TIMEOUT
    )
    print("READY", flush=True)
    rounds = 0
    try:
        while True:
            rounds += 1
            payload = b"canary %d" % rounds
            started = time.monotonic()
            await conn.send(payload)
            reply = await conn.recv()
            latency = time.monotonic() - started
            if reply != payload:
                print(f"WRONG {reply[:40]!r}", flush=True)
            print(f"ROUND {rounds} {latency:.4f}", flush=True)
            await asyncio.sleep(PERIOD)
    except peerwatch.PeerwatchError:
        assert conn.verdict is not None
        print(f"VERDICT {conn.verdict.describe()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["aio", "sync", "canary"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-connections", type=int)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    if args.mode == "aio":
        asyncio.run(serve_aio(args.max_connections))
    elif args.mode == "sync":
        serve_sync(args.max_connections)
    else:
        asyncio.run(canary(args.port))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
