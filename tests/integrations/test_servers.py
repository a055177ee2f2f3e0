"""peerwatch.testing.servers, the one place that starts the real servers: placement and the
server-side idle close the lab's server-idle-close fault relies on."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time

import pytest

from peerwatch.testing.servers import ServerUnavailable, Where, spawn_here, start_redis


def test_redis_closes_an_idle_client_after_idle_close_and_runs_where_it_is_told() -> None:
    directory = tempfile.mkdtemp(prefix="pw-test-where-")
    spawned: list[list[str]] = []

    def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
        spawned.append(argv)
        return spawn_here(argv)

    try:
        server = start_redis(Where(directory=directory, spawn=spawn), idle_close=1)
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        assert server.directory == directory
        assert len(spawned) == 1 and "--timeout" in spawned[0]
        with socket.create_connection(server.address, timeout=5) as client:
            client.sendall(b"PING\r\n")
            assert client.recv(64) == b"+PONG\r\n"
            started = time.monotonic()
            assert client.recv(64) == b""  # the server closed the idle connection (FIN)
            waited = time.monotonic() - started
        assert 0.9 <= waited <= 4.0, waited
    finally:
        server.stop()
    assert not os.path.exists(directory)
