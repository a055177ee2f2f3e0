"""Prometheus metrics of ``peerwatch serve``: summed correctly over worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import pytest
from serveproc import established_by_pid

import peerwatch

pytestmark = pytest.mark.timeout(60)

CLIENTS = 12
MESSAGES = 5
PAYLOAD = b"m" * 100


async def _settle(served, predicate, timeout: float = 5.0) -> dict[str, float]:
    """Scrape until ``predicate(metrics)`` holds: counters lag open connections by a sweep."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = await served.metrics()
        if predicate(metrics) or time.monotonic() > deadline:
            return metrics
        await asyncio.sleep(0.2)


async def test_metrics_are_summed_across_two_workers(serve, pinger):
    # The server pings every 0.2 s and gives up after 1 s; the clients ping less often,
    # so the RTT samples come from the server's own pings.
    served = serve(
        "--workers", "2", "--metrics-port", "0", "--interval", "0.2", "--timeout", "1.0"
    )  # fmt: skip
    conns = [
        await peerwatch.connect("127.0.0.1", served.port, interval=1.0, timeout=5.0)
        for _ in range(CLIENTS)
    ]
    per_worker = [established_by_pid(pid, served.port) for pid in served.pids]
    assert sum(per_worker) == CLIENTS
    assert min(per_worker) > 0, f"the kernel put every connection on one worker: {per_worker}"
    for conn in conns:
        for _ in range(MESSAGES):
            await conn.send(PAYLOAD)
            assert await asyncio.wait_for(conn.recv(), 5) == PAYLOAD

    # One more peer in its own process, frozen: the server must find it HUNG after ~1 s.
    frozen = pinger("127.0.0.1", str(served.port), "-i", "1", "-t", "5")
    await frozen.line(r"^PEERWATCH PING")
    os.kill(frozen.proc.pid, signal.SIGSTOP)
    closed = conns[:3]
    for conn in closed:
        await conn.close("bye")
    open_conns = conns[3:]

    metrics = await _settle(
        served,
        lambda m: (
            m['peerwatch_verdicts_total{cause="HUNG"}'] == 1
            and m["peerwatch_rtt_seconds_count"] > 0
        ),
    )
    os.kill(frozen.proc.pid, signal.SIGCONT)

    assert metrics["peerwatch_workers"] == 2
    assert metrics["peerwatch_connections"] == len(open_conns)
    assert metrics["peerwatch_connections_accepted_total"] == CLIENTS + 1
    assert metrics['peerwatch_verdicts_total{cause="GOODBYE"}'] == len(closed)
    assert metrics['peerwatch_verdicts_total{cause="HUNG"}'] == 1
    assert metrics['peerwatch_verdicts_total{cause="LOCAL"}'] == 0
    # detection time of the frozen peer: its silence when the verdict came, about the timeout
    assert metrics['peerwatch_detection_seconds_count{cause="HUNG"}'] == 1
    assert 1.0 <= metrics['peerwatch_detection_seconds_sum{cause="HUNG"}'] < 1.5
    assert metrics['peerwatch_detection_seconds_bucket{cause="HUNG",le="0.75"}'] == 0
    assert metrics['peerwatch_detection_seconds_bucket{cause="HUNG",le="1.5"}'] == 1
    # the server pinged (interval 0.2 s < the clients' 1 s) and measured loopback RTTs
    assert metrics["peerwatch_pings_sent_total"] >= CLIENTS
    # loopback RTT is sub-ms when idle, but a loaded 2-core CI box showed 0.25 s: bound it by
    # the timeout (a PONG slower than that would have been a verdict)
    assert 0 < metrics["peerwatch_rtt_seconds_sum"] / metrics["peerwatch_rtt_seconds_count"] < 1.0
    assert metrics["peerwatch_tcp_rtt_seconds_count"] > 0  # the kernel's view, always there
    assert 0 < metrics["peerwatch_tcp_rtt_seconds_sum"] < metrics["peerwatch_tcp_rtt_seconds_count"]
    # bytes: at least every payload both ways, at most what the clients (and the pinger) wrote
    payload_bytes = CLIENTS * MESSAGES * len(PAYLOAD)
    clients_wrote = sum(conn.bytes_out for conn in conns)
    assert payload_bytes < metrics["peerwatch_bytes_received_total"] <= clients_wrote + 4096
    assert payload_bytes < metrics["peerwatch_bytes_sent_total"]
    closed_bytes = sum(conn.bytes_out for conn in closed)
    assert metrics["peerwatch_bytes_received_total"] >= closed_bytes

    # A graceful stop says GOODBYE to the rest; what the scrape saw stays consistent.
    for conn in open_conns:
        await conn.close()
    metrics = await _settle(served, lambda m: m["peerwatch_connections"] == 0)
    assert metrics["peerwatch_connections"] == 0
    assert metrics['peerwatch_verdicts_total{cause="GOODBYE"}'] == CLIENTS


async def test_connections_beyond_the_limit_are_refused_and_counted(serve):
    served = serve("--workers", "1", "--max-connections", "2", "--metrics-port", "0")
    kept = [await peerwatch.connect("127.0.0.1", served.port) for _ in range(2)]
    extra = await peerwatch.connect("127.0.0.1", served.port)
    verdict = await asyncio.wait_for(extra.wait_closed(), 5)
    assert verdict.cause is peerwatch.Cause.GOODBYE
    assert "too many connections" in (verdict.goodbye_reason or "")
    metrics = await _settle(served, lambda m: m["peerwatch_connections_refused_total"] == 1)
    assert metrics["peerwatch_connections_refused_total"] == 1
    assert metrics["peerwatch_connections"] == 2
    assert all(conn.verdict is None for conn in kept)
    for conn in kept:
        await conn.close()


async def test_connections_that_fail_the_handshake_are_counted_by_cause(serve):
    served = serve("--workers", "1", "--metrics-port", "0", "--handshake-timeout", "0.5")
    for greeting in (b"GET / HTTP/1.0\r\n\r\n", b""):  # another protocol; a peer that says nothing
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            sock.settimeout(5)
            sock.sendall(greeting)
            while sock.recv(4096):  # until the server's GOODBYE and FIN
                pass
    failures = 'peerwatch_handshake_failures_total{cause="%s"}'
    metrics = await _settle(served, lambda m: failures % "PROTOCOL" in m and failures % "HUNG" in m)
    assert metrics[failures % "PROTOCOL"] == 1
    assert metrics[failures % "HUNG"] == 1  # loopback: the kernel acked, nobody spoke
    assert metrics["peerwatch_connections_accepted_total"] == 0
    assert metrics['peerwatch_verdicts_total{cause="PROTOCOL"}'] == 0
