"""What the flush budget and the max_frame floor buy (issue 8, item 6), side by side in one run.

    python -m bench.flush_budget

1. One connection flushes 100,000 queued 64-byte messages to a sink on the same
   loop, with ``FLUSH_FRAMES`` at its default and unbounded (the old behaviour:
   only the 1 MiB byte budget). A ticker task records the longest loop pass (what
   a neighbour's heartbeat waits for) and the time to drain everything.
2. The CPU cost of cutting a 1 MiB message into frames for a peer announcing
   max_frame 64 (1-byte chunks, allowed before) and the 4096 floor.
"""

from __future__ import annotations

import asyncio
import time
from statistics import median

import peerwatch
import peerwatch.aio.connection as connection
from peerwatch.core.frames import MIN_MAX_FRAME, chunk_message

MESSAGES = 100_000
MESSAGE = b"m" * 64


async def discard(conn: peerwatch.Connection) -> None:
    async for _ in conn:
        pass


async def flush_run(frames_budget: int) -> tuple[float, float]:
    """(longest flush pass, seconds to drain) flushing MESSAGES with ``frames_budget``.

    The pass is timed around ``Connection._flush`` itself: the sink on the same
    loop has long passes of its own (reading 256 KiB of small frames).
    """
    connection.FLUSH_FRAMES = frames_budget
    sink = await peerwatch.serve(discard, "127.0.0.1", 0)
    conn = await peerwatch.connect("127.0.0.1", sink.port, send_queue=MESSAGES)
    longest = 0.0
    flush = connection.Connection._flush

    def timed(self: connection.Connection, everything: bool = False) -> None:
        nonlocal longest
        started = time.perf_counter()
        flush(self, everything)
        longest = max(longest, time.perf_counter() - started)

    connection.Connection._flush = timed  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        for _ in range(MESSAGES):
            await conn.enqueue(MESSAGE)
        longest = 0.0  # the passes that follow, not the eager writes of enqueue itself
        await conn.drain()
        elapsed = time.perf_counter() - started
    finally:
        connection.Connection._flush = flush  # type: ignore[method-assign]
    await conn.close()
    await sink.shutdown()
    return longest, elapsed


def chunk_cost(max_frame: int) -> float:
    """Seconds to cut 1 MiB into DATA frames fitting ``max_frame`` (the old chunk rule)."""
    chunk = max(1, min(64 * 1024, max_frame - 64))
    payload = b"x" * (1 << 20)
    started = time.perf_counter()
    chunk_message(1, payload, chunk)
    return time.perf_counter() - started


async def main() -> None:
    default = connection.FLUSH_FRAMES
    rows: list[tuple[tuple[float, float], tuple[float, float]]] = []
    for _ in range(3):  # interleaved, so load on the machine hits both alike
        rows.append((await flush_run(default), await flush_run(10**9)))
    connection.FLUSH_FRAMES = default
    budget = (median(r[0][0] for r in rows), median(r[0][1] for r in rows))
    unbounded = (median(r[1][0] for r in rows), median(r[1][1] for r in rows))
    print(f"flush of {MESSAGES:,} x {len(MESSAGE)} B messages (median of {len(rows)} runs)")
    for label, (longest, drained) in (
        (f"FLUSH_FRAMES={default}", budget),
        ("unbounded", unbounded),
    ):
        print(f"  {label:18}: longest flush pass {longest * 1000:7.2f} ms, drain {drained:.2f} s")
    print(f"  longest pass unbounded/budget: {unbounded[0] / budget[0]:.1f}x;"
          f" drain time budget/unbounded: {budget[1] / unbounded[1]:.2f}x")  # fmt: skip


def cutting() -> None:
    tiny, floor = chunk_cost(64), chunk_cost(MIN_MAX_FRAME)
    print("cutting 1 MiB into frames for the peer's max_frame")
    print(f"  max_frame 64 (1-byte chunks): {tiny * 1000:8.1f} ms")
    print(f"  max_frame {MIN_MAX_FRAME} (the floor): {floor * 1000:8.3f} ms")
    print(f"  ratio: {tiny / floor:.0f}x")


if __name__ == "__main__":
    asyncio.run(main())
    cutting()
