"""N pre-forked peerwatch workers sharing one port through SO_REUSEPORT.

``python -m bench.accept_server --workers N``

This is what ``peerwatch serve --workers N`` does, built from the public API
(``peerwatch.serve(..., reuse_port=True)`` in each worker) so the accept-scaling
benchmark runs whether or not that command exists. The parent reserves a port
with a bound, non-listening SO_REUSEPORT socket (it never receives connections:
the kernel balances only among listening sockets), forks the workers, and
prints ``ready`` with the port and the workers' pids once every worker listens.
Each worker runs a sink handler: it reads messages and drops them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from typing import Any

from bench.procs import child_setup, emit


async def worker_main(port: int, ready_fd: int) -> None:
    import peerwatch

    async def sink(conn: Any) -> None:
        async for _ in conn:
            pass

    await peerwatch.serve(
        sink, "127.0.0.1", port, reuse_port=True, interval=1.0, timeout=5.0, backlog=4096
    )
    os.write(ready_fd, b"%d\n" % os.getpid())
    await asyncio.Event().wait()  # until SIGTERM (default action) or the parent's death


def fork_worker(port: int, ready_fd: int, max_seconds: float) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child_setup(max_seconds, parent=parent)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            asyncio.run(worker_main(port, ready_fd))
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def main(options: argparse.Namespace) -> None:
    reserve = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserve.bind(("127.0.0.1", 0))
    port = int(reserve.getsockname()[1])
    read_end, write_end = os.pipe()
    pids = [fork_worker(port, write_end, options.max_seconds) for _ in range(options.workers)]
    os.close(write_end)
    listening: list[int] = []
    deadline = time.monotonic() + 60
    try:
        with os.fdopen(read_end, "rb", buffering=0) as reports:
            pending = b""
            while len(listening) < options.workers and time.monotonic() < deadline:
                chunk = reports.read(4096)
                if not chunk:
                    break  # every worker is gone
                pending += chunk
                *lines, pending = pending.split(b"\n")
                listening += [int(line) for line in lines]
            if len(listening) < options.workers:
                emit("error", message=f"only {len(listening)} of {options.workers} workers listen")
                return
            emit("ready", port=port, workers=pids)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            sys.stdin.readline()  # the parent closes our stdin, or SIGTERMs us
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        reserve.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=600)
    options = parser.parse_args()
    child_setup(options.max_seconds)
    main(options)
