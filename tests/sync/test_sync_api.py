"""The blocking API: same semantics, every call bounded, heartbeats while the caller is busy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import peerwatch
from peerwatch import Cause, sync

pytestmark = pytest.mark.timeout(60)
PEERPROC = Path(__file__).parent.parent / "aio" / "peerproc.py"


def echo(conn: sync.Connection) -> None:
    for message in conn:
        if message == b"slow":
            time.sleep(2.0)  # a busy handler thread: the library still answers pings
        conn.send(message, timeout=10)


@pytest.fixture
def server() -> Iterator[sync.Server]:
    with sync.serve(echo, "127.0.0.1", 0, interval=0.2, timeout=1.0) as srv:
        yield srv


def test_send_recv_close(server: sync.Server) -> None:
    with sync.connect("127.0.0.1", server.port, interval=0.2, timeout=1.0) as conn:
        conn.send(b"hello", timeout=5)
        assert conn.recv(timeout=5) == b"hello"
        delivery = conn.enqueue(b"later", timeout=5)
        delivery.wait(timeout=5)
        assert delivery.acknowledged
        assert conn.recv(timeout=5) == b"later"
        verdict = conn.close("done")
    assert verdict.cause is Cause.LOCAL


def test_recv_timeout_leaves_the_connection_alive(server: sync.Server) -> None:
    with sync.connect("127.0.0.1", server.port, interval=0.2, timeout=1.0) as conn:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.recv(timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 2.0
        conn.send(b"still here", timeout=5)
        assert conn.recv(timeout=5) == b"still here"


def test_busy_caller_and_busy_handler_do_not_kill_the_connection(server: sync.Server) -> None:
    with sync.connect("127.0.0.1", server.port, interval=0.2, timeout=1.0) as conn:
        time.sleep(2.5)  # the caller is busy for 2.5 x timeout: heartbeats go on without it
        assert conn.verdict is None
        conn.send(b"slow", timeout=5)  # the server's handler thread now sleeps 2 s
        assert conn.recv(timeout=10) == b"slow"
        assert conn.verdict is None and conn.rtt is not None


def test_every_call_refuses_an_unbounded_wait(server: sync.Server) -> None:
    with sync.connect("127.0.0.1", server.port) as conn:
        for bad in (0, -1, float("inf"), float("nan")):
            with pytest.raises(ValueError, match="may block forever"):
                conn.recv(timeout=bad)


def test_dead_peer_raises_with_its_verdict() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(PEERPROC), "echo"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        conn = sync.connect("127.0.0.1", port, interval=0.2, timeout=1.0)
        conn.send(b"x", timeout=5)
        assert conn.recv(timeout=5) == b"x"
        os.kill(proc.pid, signal.SIGSTOP)
        with pytest.raises(peerwatch.PeerDead) as raised:
            conn.recv(timeout=10)
        assert raised.value.verdict.cause is Cause.HUNG
        assert conn.verdict is raised.value.verdict
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_refused_connect_raises_peer_dead() -> None:
    with pytest.raises(peerwatch.PeerDead) as raised:
        sync.connect("127.0.0.1", 1, timeout=5)
    assert raised.value.verdict.cause is Cause.RESET


def test_many_connections_are_served_at_once(server: sync.Server) -> None:
    # more than any default thread pool: every handler blocks for its connection's life
    conns = [sync.connect("127.0.0.1", server.port, interval=0.2, timeout=1.0) for _ in range(40)]
    for i, conn in enumerate(conns):
        conn.send(b"%d" % i, timeout=5)
    for i, conn in enumerate(conns):
        assert conn.recv(timeout=5) == b"%d" % i
    for conn in conns:
        conn.close()
