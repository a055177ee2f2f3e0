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
import importlib
import os
import select
import signal
import sys
import time
from typing import Any

from bench.procs import child_setup, emit


async def peer_main(port: int, interval: float, timeout: float, report: int) -> None:
    import peerwatch

    conn: Any = await peerwatch.connect(
        "127.0.0.1", port, interval=interval, timeout=timeout, handshake_timeout=30.0
    )
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
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child_setup(options.max_seconds, parent=parent)
            asyncio.run(peer_main(options.port, options.interval, options.timeout, report))
        except BaseException as exc:
            code = 1
            with contextlib.suppress(OSError):
                os.write(report, b"fail %s\n" % repr(exc)[:200].encode(errors="replace"))
        os._exit(code)
    return pid


def exited_early(reported: list[int]) -> None:
    """Raise if a peer exited while the flock was still being started.

    A peer that never reported died before it connected (``os._exit`` leaves no
    ``fail`` line); one that reported lost its connection already (the observer
    gave up on it: a machine too busy to run the scenario). Either would make the
    measurement wrong, so the run stops with the reason instead.
    """
    with contextlib.suppress(ChildProcessError):
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid and pid in reported:
            raise RuntimeError(
                f"peer {pid}'s connection ended while the flock was starting"
                f" ({describe_status(status)}): the observer gave up on it"
            )
        if pid:
            raise RuntimeError(f"peer {pid} exited before it connected ({describe_status(status)})")


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


#: Peers started at a time: 400 Python processes starting at once on one core would
#: starve each other for seconds (and time out their own handshakes).
BATCH = 20


class Reports:
    """The pipe the peers write their pid (or ``fail <why>``) to, read with a deadline."""

    #: How often a wait for reports checks whether a peer died without a word.
    POLL = 0.5

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""

    def collect(self, wanted: int, into: list[int], deadline: float) -> None:
        while len(into) < wanted:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"only {len(into)} of {wanted} peers connected in time")
            if not select.select([self.fd], [], [], min(remaining, self.POLL))[0]:
                exited_early(into)
                continue
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise RuntimeError("every peer is gone")
            self.pending += chunk
            *lines, self.pending = self.pending.split(b"\n")
            for line in lines:
                if line.startswith(b"fail"):
                    raise RuntimeError(f"a peer failed to connect: {line[5:].decode()}")
                into.append(int(line))


def main(options: argparse.Namespace) -> None:
    # imported once here, shared copy-on-write by every fork
    importlib.import_module("peerwatch.aio.client")
    read_end, write_end = os.pipe()
    reports = Reports(read_end)
    kids: list[int] = []
    ready: list[int] = []
    deadline = time.monotonic() + 120
    try:
        while len(kids) < options.count:
            batch = min(BATCH, options.count - len(kids))
            kids += [spawn(options, write_end) for _ in range(batch)]
            reports.collect(len(kids), ready, deadline)
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
