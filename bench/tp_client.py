"""Throughput load generator: pipelines messages on ONE connection for a fixed time.

``python -m bench.tp_client KIND PORT --size BYTES --seconds S --mode ff|ack [--uvloop]``

It sends as fast as the implementation lets it for ``S`` seconds, then an END
message, and stops the clock when the server's application reports how many
messages it consumed (so messages still in buffers are not counted as done).
``ff`` (fire-and-forget) for peerwatch is the README's fire-and-forget API:
``enqueue_nowait`` per message, ``await enqueue`` when it raises ``QueueFull``, then ``drain``;
``await`` is fire-and-forget through ``await enqueue`` per message (the Delivery unused);
``ack`` awaits each message's delivery future (``enqueue`` returns it), keeping at
most ``window`` deliveries outstanding.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time
from typing import Any

from bench.aiohelpers import loop_name, run
from bench.floor import END, FramedSender
from bench.procs import child_setup, emit
from bench.tp_core import compiled as core_compiled


def batch_for(size: int) -> int:
    """Messages written between clock reads and flow-control checks (about 64 KiB)."""
    return max(1, min(64, 65536 // max(size, 1)))


def parse_count(reply: bytes | str | None) -> int:
    assert isinstance(reply, bytes) and reply.startswith(b"COUNT "), reply
    return int(reply.split()[1])


async def run_floor(port: int, payload: bytes, seconds: float) -> tuple[int, int, float]:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(FramedSender, "127.0.0.1", port)
    assert protocol.transport is not None
    write = protocol.transport.write
    batch = batch_for(len(payload))
    can_write = protocol.can_write
    sent = 0
    emit("start")
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            write(len(payload).to_bytes(4, "big") + payload)
        sent += batch
        if not can_write.is_set():
            await can_write.wait()
        if time.perf_counter() >= deadline:
            break
    protocol.send(END)
    consumed = parse_count(await protocol.recv())
    elapsed = time.perf_counter() - start
    protocol.transport.close()
    return sent, consumed, elapsed


async def run_websockets(port: int, payload: bytes, seconds: float) -> tuple[int, int, float]:
    from websockets.asyncio.client import connect

    async with connect(
        f"ws://127.0.0.1:{port}", max_size=None, compression=None, ping_interval=None
    ) as ws:
        batch = batch_for(len(payload))
        sent = 0
        emit("start")
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(batch):
                await ws.send(payload)
            sent += batch
            if time.perf_counter() >= deadline:
                break
        await ws.send(END)
        consumed = parse_count(await ws.recv())
        elapsed = time.perf_counter() - start
    return sent, consumed, elapsed


async def run_peerwatch(
    port: int, payload: bytes, seconds: float, mode: str, window: int, send_queue: int
) -> tuple[int, int, float]:
    import peerwatch

    tuning: dict[str, Any] = {"send_queue": send_queue} if send_queue else {}
    conn: Any = await peerwatch.connect(
        "127.0.0.1", port, interval=1.0, timeout=5.0, max_frame=2 * 1024 * 1024, **tuning
    )
    batch = batch_for(len(payload))
    sent = 0
    outstanding: collections.deque[Any] = collections.deque()
    emit("start")
    start = time.perf_counter()
    deadline = start + seconds
    enqueue, enqueue_nowait, queue_full = conn.enqueue, conn.enqueue_nowait, peerwatch.QueueFull
    while True:
        if mode == "ff":
            for _ in range(batch):
                try:
                    enqueue_nowait(payload)
                except queue_full:  # backpressure: wait for room as the README shows
                    await enqueue(payload)
        elif mode == "await":
            for _ in range(batch):
                await enqueue(payload)
        else:
            for _ in range(batch):
                outstanding.append(await enqueue(payload))
                if len(outstanding) > window:
                    await outstanding.popleft()
        sent += batch
        if time.perf_counter() >= deadline:
            break
    while outstanding:
        await outstanding.popleft()
    await conn.drain()
    await conn.enqueue(END)
    consumed = parse_count(await conn.recv())
    elapsed = time.perf_counter() - start
    await conn.close("done")
    return sent, consumed, elapsed


async def main(options: argparse.Namespace) -> None:
    payload = b"x" * options.size
    if options.kind == "floor":
        result = await run_floor(options.port, payload, options.seconds)
    elif options.kind == "websockets":
        result = await run_websockets(options.port, payload, options.seconds)
    else:
        result = await run_peerwatch(
            options.port, payload, options.seconds, options.mode, options.window, options.send_queue
        )
    sent, consumed, elapsed = result
    compiled = options.kind == "peerwatch" and core_compiled()
    emit(
        "result", sent=sent, consumed=consumed, seconds=elapsed, loop=loop_name(), compiled=compiled
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["floor", "websockets", "peerwatch"])
    parser.add_argument("port", type=int)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--mode", choices=["ff", "await", "ack"], default="ff")
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--send-queue", type=int, default=0, help="peerwatch send_queue")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=300)
    options = parser.parse_args()
    child_setup(options.max_seconds)
    run(main(options), options.uvloop)
