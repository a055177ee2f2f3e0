"""Servers in their own processes under pressure: a low fd limit, a client that never reads."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from serveproc import Proc, Served

import peerwatch
from peerwatch.core.config import HANDSHAKE_GRACE

pytestmark = pytest.mark.timeout(120)

LIMITPROC = Path(__file__).with_name("limitproc.py")
MiB = 1 << 20


@pytest.fixture
def limitproc() -> Iterator[Callable[..., Proc]]:
    """``limitproc("serve", "aio", ...)`` -> a Proc running limitproc.py, killed at the end."""
    started: list[Proc] = []

    def start(*args: str) -> Proc:
        proc = Proc([sys.executable, str(LIMITPROC), *args])
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def echoes(conn: peerwatch.Connection, word: bytes) -> bool:
    await conn.send(word)
    return await asyncio.wait_for(conn.recv(), 5) == word


async def settled(tasks: list[asyncio.Task[peerwatch.Connection]], quiet: float = 1.0) -> int:
    """How many of ``tasks`` are done once that number stopped changing for ``quiet`` s."""
    loop = asyncio.get_running_loop()
    last, since, deadline = -1, loop.time(), loop.time() + 20
    while loop.time() < deadline:
        done = sum(task.done() for task in tasks)
        if done != last:
            last, since = done, loop.time()
        elif loop.time() - since >= quiet:
            break
        await asyncio.sleep(0.1)
    return last


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["aio", "sync"])
@pytest.mark.parametrize("capped", [True, False], ids=["fd-cap", "emfile"])
async def test_fd_limit_backs_off_quietly_and_recovers(
    limitproc: Callable[..., Proc], kind: str, capped: bool
) -> None:
    # capped: the server stops accepting below the fd limit; emfile: the cap is removed, so
    # accept(2) itself fails with EMFILE and the accept loop must back off
    server = limitproc("serve", kind, "--nofile", "256", *([] if capped else ["--no-cap"]))
    port = int((await server.line(r"^PORT (\d+)"))[1])
    attempts = [
        asyncio.ensure_future(peerwatch.connect("127.0.0.1", port, handshake_timeout=30.0))
        for _ in range(400)
    ]
    try:
        admitted = await settled(attempts)
        assert 100 <= admitted < 400, admitted  # the rest wait in the listen backlog
        first = [task.result() for task in attempts if task.done()]
        waiting = [task for task in attempts if not task.done()]
        assert all(await asyncio.gather(*(echoes(c, b"first") for c in first)))
        await asyncio.gather(*(conn.close() for conn in first))
        # the clients that waited get in as the first ones leave
        rest = await asyncio.wait_for(asyncio.gather(*waiting), 30)
        assert all(await asyncio.gather(*(echoes(c, b"rest") for c in rest)))
        await asyncio.gather(*(conn.close() for conn in rest))
    finally:
        for task in attempts:
            task.cancel()
    log = "\n".join(server.err)
    assert "Traceback" not in log
    assert len(log) < 2000, log[:3000]
    started = "connections open, the cap" if capped else "cannot accept connections: EMFILE"
    assert log.count(started) == 1, log
    assert log.count("accepting connections again") == 1, log


async def test_silent_sockets_at_the_fd_cap_make_way_for_a_real_peer(
    limitproc: Callable[..., Proc],
) -> None:
    # 150 sockets that never say HELLO, more than the cap under RLIMIT_NOFILE 128; the
    # server's handshake timeout is 30 s, so only the handshake allowance can free the slots
    server = limitproc("serve", "aio", "--nofile", "128")
    port = int((await server.line(r"^PORT (\d+)"))[1])
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(150)]
    try:
        started = time.monotonic()
        conn = await peerwatch.connect("127.0.0.1", port, handshake_timeout=10.0)
        assert await echoes(conn, b"let in")
        assert time.monotonic() - started < HANDSHAKE_GRACE + 3.0
        await conn.close()
    finally:
        for sock in silent:
            sock.close()
    log = "\n".join(server.err)
    assert "Traceback" not in log and log.count("connections open, the cap") == 1, log


async def test_echo_memory_stays_bounded_with_a_client_that_never_reads(
    serve: Callable[..., Served], limitproc: Callable[..., Proc]
) -> None:
    served = serve()  # `peerwatch serve`, echo handler, every default
    worker = served.pids[0]
    canary = await peerwatch.connect("127.0.0.1", served.port)
    try:
        assert await echoes(canary, b"before")
        before = rss(worker)
        hog = limitproc("hog", "--port", str(served.port), "--count", "200", "--size", str(MiB))
        sent, ending = (await hog.line(r"^SENT (\d+) (\w+)", timeout=60)).groups()
        assert ending == "BLOCKED", "the server ended the connection instead of pushing back"
        assert await echoes(canary, b"during")
        grown = rss(worker) - before
        # the defaults bound it: send_buffer 8 MiB + recv_buffer 8 MiB + a message in the making
        assert grown < 48 * MiB, f"server grew by {grown / MiB:.0f} MiB"
        assert int(sent) < 200, "the server took every message of a client that never reads"
        assert canary.verdict is None
    finally:
        await canary.close()
