"""The server's parts in one process: built-in handlers, handler specs, metrics bookkeeping."""

from __future__ import annotations

import asyncio

import pytest

import peerwatch
from peerwatch.errors import ConfigError
from peerwatch.server.handlers import echo, resolve_handler, sink
from peerwatch.server.workers import describe_exit

pytestmark = pytest.mark.timeout(30)


async def test_echo_returns_every_message_in_order():
    async with await peerwatch.serve(echo, "127.0.0.1", 0) as server:
        conn = await peerwatch.connect("127.0.0.1", server.port)
        for i in range(50):
            await conn.enqueue(b"%d" % i)
        await conn.drain()
        assert [await conn.recv() for _ in range(50)] == [b"%d" % i for i in range(50)]
        await conn.close()


async def test_sink_acknowledges_and_sends_nothing_back():
    async with await peerwatch.serve(sink, "127.0.0.1", 0) as server:
        conn = await peerwatch.connect("127.0.0.1", server.port)
        for _ in range(20):
            await conn.send(b"x" * 1000)  # returns once the sink's recv() took it
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(conn.recv(), 0.2)
        await conn.close()


def test_handler_specs_resolve_or_say_what_is_wrong():
    assert resolve_handler("echo") is echo
    assert resolve_handler("sink") is sink
    assert resolve_handler("peerwatch.server.handlers:sink") is sink
    for spec, message in [
        ("nope", "expected 'echo', 'sink'"),
        ("no.such.module:f", "cannot import"),
        ("peerwatch.server.handlers:missing", "has no 'missing'"),
        ("os.path:join", "must be an 'async def handler"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resolve_handler(spec)


def test_worker_exits_are_described_for_operators():
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(None) == "is still running"


async def test_worker_metrics_follow_connections_and_verdicts():
    prometheus_client = pytest.importorskip("prometheus_client")
    from peerwatch.server.metrics import WorkerMetrics

    registry = prometheus_client.CollectorRegistry()
    metrics = WorkerMetrics(registry)

    def value(name: str, **labels: str) -> float:
        got = registry.get_sample_value(name, labels)
        return 0.0 if got is None else got

    server = await peerwatch.serve(
        echo, "127.0.0.1", 0, interval=0.1, timeout=1.0, on_connection=metrics.watch
    )
    async with server:
        conns = [
            await peerwatch.connect("127.0.0.1", server.port, interval=1.0, timeout=5.0)
            for _ in range(3)
        ]
        for conn in conns:
            await conn.send(b"hello")
            await conn.recv()
        await asyncio.sleep(0.35)  # a few server pings, answered
        metrics.sweep(server)
        assert value("peerwatch_connections") == 3
        assert value("peerwatch_connections_accepted_total") == 3
        assert value("peerwatch_pings_sent_total") >= 3
        assert value("peerwatch_rtt_seconds_count") == 3  # one sample per connection per sweep
        assert value("peerwatch_tcp_rtt_seconds_count") == 3
        received = value("peerwatch_bytes_received_total")
        assert received == sum(conn.bytes_out for conn in conns)
        await conns[0].close()
        await asyncio.sleep(0.05)
        assert value("peerwatch_connections") == 2
        assert value("peerwatch_verdicts_total", cause="GOODBYE") == 1
        assert value("peerwatch_detection_seconds_count", cause="GOODBYE") == 1
        # the closed connection's bytes stay counted: totals of ended connections are kept
        metrics.sweep(server)
        assert value("peerwatch_bytes_received_total") >= received
        assert value("peerwatch_bytes_received_total") == sum(conn.bytes_out for conn in conns)
    # server shutdown: this side closed the rest (LOCAL), which is no detection
    await asyncio.sleep(0.05)
    assert value("peerwatch_connections") == 0
    assert value("peerwatch_verdicts_total", cause="LOCAL") == 2
    assert value("peerwatch_detection_seconds_count", cause="LOCAL") == 0
