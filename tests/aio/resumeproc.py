"""A resumable peerwatch server in its own process, so a test can read its RSS.

    python resumeproc.py --budget BYTES --replay BYTES --chunk BYTES [--window S]

Prints ``PORT <n>`` once listening. A session whose first message is ``flood``
gets ``chunk``-byte messages until it ends (a greedy client that never
acknowledges holds them all); any other session is echoed. Every session's end
is printed as ``END <cause> handed_back=<n> <detail>``.
"""

from __future__ import annotations

import argparse
import asyncio

import peerwatch
from peerwatch import PeerDead, ResumableConnection


def handler(chunk: int) -> peerwatch.aio.resumable_server.SessionHandler:
    async def serve_session(session: ResumableConnection) -> None:
        try:
            first = await session.recv()
            if first == b"flood":
                while True:
                    await session.enqueue(b"x" * chunk)  # resident: bytes(n) may be untouched pages
            await session.enqueue(first)
            async for message in session:
                await session.enqueue(message)
        except PeerDead:
            pass
        verdict = await session.wait_closed()
        handed_back = len(verdict.undelivered)
        print(f"END {verdict.cause.value} handed_back={handed_back} {verdict.detail}", flush=True)

    return serve_session


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, required=True)
    parser.add_argument("--replay", type=int, required=True)
    parser.add_argument("--chunk", type=int, required=True)
    parser.add_argument("--window", type=float, default=30.0)
    args = parser.parse_args()
    async with peerwatch.serve(
        handler(args.chunk),
        "127.0.0.1",
        0,
        resume_window=args.window,
        max_replay_bytes=args.replay,
        memory_budget=args.budget,
    ) as server:
        print(f"PORT {server.port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
