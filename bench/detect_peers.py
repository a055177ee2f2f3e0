"""A flock of peer processes, one peerwatch connection each, to be frozen or killed.

``python -m bench.detect_peers PORT COUNT --interval I --timeout T``

The parent imports everything once, then forks COUNT children (cheap: copy on
write). Each child connects to the observer with ``peerwatch.connect``, sends
``PID <pid>`` and then only keeps its side of the heartbeat. On SIGUSR1 a child
freezes itself: it sends ``FREEZE <monotonic time>`` as its last word, lets the
loop write it, and SIGSTOPs itself, so the observer's last evidence of life is
known to the microsecond (CLOCK_MONOTONIC is shared by all processes of a host).
Frozen or killed children are SIGKILLed and reaped when the parent ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from typing import Any

from bench.procs import child_setup, emit


async def peer_main(port: int, interval: float, timeout: float, report: int) -> None:
    import peerwatch

    conn: Any = await peerwatch.connect("127.0.0.1", port, interval=interval, timeout=timeout)
    await conn.send(b"PID %d" % os.getpid())
    loop = asyncio.get_running_loop()

    async def freeze() -> None:
        stamp = time.monotonic()
        await conn.enqueue(b"FREEZE %.9f" % stamp)
        for _ in range(3):  # let the loop run the flush that writes it to the socket
            await asyncio.sleep(0)
        os.kill(os.getpid(), signal.SIGSTOP)

    loop.add_signal_handler(signal.SIGUSR1, lambda: loop.create_task(freeze()))
    os.write(report, b"%d\n" % os.getpid())
    await conn.wait_closed()


def spawn(options: argparse.Namespace, report: int) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child_setup(options.max_seconds)
            asyncio.run(peer_main(options.port, options.interval, options.timeout, report))
        except BaseException:
            code = 1
            with contextlib.suppress(OSError):
                os.write(report, b"fail\n")
        os._exit(code)
    return pid


def main(options: argparse.Namespace) -> None:
    read_end, write_end = os.pipe()
    kids = [spawn(options, write_end) for _ in range(options.count)]
    os.close(write_end)  # only the children write; EOF when all of them are gone
    pending = b""
    ready: list[int] = []
    deadline = time.monotonic() + 60
    try:
        with os.fdopen(read_end, "rb", buffering=0) as reports:
            while len(ready) < options.count and time.monotonic() < deadline:
                chunk = reports.read(4096)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line == b"fail":
                        raise RuntimeError("a peer failed to connect")
                    ready.append(int(line))
            emit("ready", pids=ready)
            sys.stdin.readline()  # the parent closes our stdin (or we die with it)
    finally:
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in kids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=300)
    options = parser.parse_args()
    child_setup(options.max_seconds)
    main(options)
