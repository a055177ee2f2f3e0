"""Real peers in their own processes for the blocking-API tests: started, stopped, always reaped.

    python peers.py sender --count N      serve; send N numbered messages one by one (each
                                          acknowledged before the next), then b"end"
    python peers.py idler --port P        connect (interval 0.2 s, timeout 1 s) and idle

Each prints one line once ready (``PORT <n>`` or ``CONNECTED``) and ``SENT <n>`` when done.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import peerwatch


async def sender(count: int) -> None:
    done = asyncio.Event()

    async def send_all(conn: peerwatch.Connection) -> None:
        for i in range(count):
            await conn.send(b"%d" % i)  # returns only once the peer application took it
            await asyncio.sleep(random.uniform(0, 0.006))  # arrivals spread over the timeouts
        print("SENT", count, flush=True)
        await conn.send(b"end")
        await conn.wait_closed()
        done.set()

    server = await peerwatch.serve(send_all, "127.0.0.1", 0, interval=0.2, timeout=2.0)
    print("PORT", server.port, flush=True)
    await done.wait()


async def idler(port: int) -> None:
    await peerwatch.connect("127.0.0.1", port, interval=0.2, timeout=1.0)
    print("CONNECTED", flush=True)
    await asyncio.Event().wait()


@contextmanager
def peer(*args: str) -> Iterator[subprocess.Popen[str]]:
    """Run ``peers.py *args``; SIGCONT + SIGKILL + reap on the way out, whatever happened."""
    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["sender", "idler"])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args()
    if options.mode == "sender":
        asyncio.run(sender(options.count))
    else:
        asyncio.run(idler(options.port))
