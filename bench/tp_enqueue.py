"""Per-message cost of the asyncio client's send path alone: ``await conn.enqueue(payload)``.

``python -m bench.tp_enqueue [ROUNDS] [nowait]``

A ``Connection`` on a stub transport that swallows writes (no socket, no peer process) is
handed the server's HELLO, then sends ``ROUNDS`` x 256 messages of 100 bytes; after each
256 it flushes and is fed the cumulative ACK, as a real peer would send. What is measured is
what the sending process does per message in Python: the coroutine, ``Protocol.offer``, the
``Delivery`` handle, cutting the frames, applying the ACK. Under ``valgrind --tool=callgrind``
the difference of two ROUNDS counts gives instructions per message (bench/analysis.md).
``nowait`` sends with ``conn.enqueue_nowait(payload)`` instead: no coroutine, no ``Delivery``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from peerwatch.aio.connection import Connection
from peerwatch.aio.sockets import recv_view
from peerwatch.core.config import Config
from peerwatch.core.frames import PROTOCOL_VERSION, Hello, encode_ack, encode_hello

BATCH = 256


class SwallowingTransport:
    """Enough of ``asyncio.Transport`` for a ``Connection`` that only writes."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def run(rounds: int, nowait: bool = False) -> float:
    """Seconds per message over ``rounds`` x ``BATCH`` messages."""
    conn = Connection(Config(), "client")
    conn.connection_made(SwallowingTransport())  # type: ignore[arg-type]

    def feed(data: bytes) -> None:
        recv_view()[: len(data)] = data
        conn.buffer_updated(len(data))

    feed(encode_hello(Hello(PROTOCOL_VERSION, 1, 1.0, 5.0, 1 << 20, 1 << 24)))
    payload = b"x" * 100
    enqueue, enqueue_nowait = conn.enqueue, conn.enqueue_nowait
    sent = 0
    start = time.perf_counter()
    for _ in range(rounds):
        if nowait:  # the window (1,024) never fills: each round is ACKed
            for _ in range(BATCH):
                enqueue_nowait(payload)
        else:
            for _ in range(BATCH):
                await enqueue(payload)
        sent += BATCH
        conn._flush()
        feed(encode_ack(sent))
    return (time.perf_counter() - start) / sent


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    nowait = sys.argv[2:] == ["nowait"]
    print(f"{asyncio.run(run(rounds, nowait)) * 1e9:.0f} ns per message")


if __name__ == "__main__":
    main()
