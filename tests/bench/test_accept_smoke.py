"""The accept benchmark still runs, and its pre-forked fallback server still starts.

``bench.accept_server`` forks its workers; a forked worker once took the benchmark
(whose pid ``Child`` puts in the environment) for its parent, found it was not,
and exited at once, so the server never got ready. The quick benchmark itself is
checked for what its numbers rely on: every setup ran and held every connection.
"""

from __future__ import annotations

import socket

import pytest
from bench.accept import run_accept
from bench.procs import Child


def test_forked_accept_workers_listen_and_accept() -> None:
    with Child("bench.accept_server", ["--workers", "2", "--max-seconds", "30"]) as server:
        ready = server.read_event(20, "ready")
        assert len(ready["workers"]) == 2
        with socket.create_connection(("127.0.0.1", ready["port"]), timeout=5) as conn:
            conn.settimeout(5)
            assert conn.recv(64), "a peerwatch worker greets a new connection with its HELLO"


@pytest.mark.slow
def test_quick_accept_benchmark_holds_every_connection() -> None:
    result = run_accept(quick=True, log=lambda _: None)
    assert result["failed"] == {}
    assert len(result["rows"]) >= 2
    for row in result["rows"]:
        assert row["held"] == row["connections"], row
