"""Prometheus metrics of a multi-worker server, correct across processes.

Each worker process writes its values to files in one shared directory
(prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``); the
supervisor serves ``/metrics`` by summing those files. The directory is created
by the supervisor, set in every worker's environment before prometheus-client
is imported there, and removed when the supervisor exits.

What is exported (all names start with ``peerwatch_``):

``connections``             open connections (gauge, summed over live workers)
``connections_accepted``    connections that completed the handshake (counter)
``connections_refused``     connections refused with GOODBYE(OVERLOADED) (counter)
``verdicts{cause}``         connections ended, by verdict cause (counter)
``detection_seconds{cause}`` time from the last evidence of life from the peer
                            (any inbound byte) to the verdict: ``Verdict.silent_for``.
                            For SILENT and HUNG this is how long the peer was
                            silent before we gave up (the configured timeout plus
                            our lateness); for EOF, RESET and GOODBYE the end was
                            itself announced, and it is the quiet that preceded it.
                            Verdicts this side reached by closing (LOCAL) are not
                            detections and are left out.
``rtt_seconds``             application round-trip time (PING to PONG, smoothed as
                            in RFC 6298) of connections whose PING this server sent
                            and got answered since their last sample. Only one side
                            of an idle connection pings, the connecting one, so with
                            clients pinging at least as often as the server this
                            stays empty, hence:
``tcp_rtt_seconds``         the kernel's smoothed RTT (TCP_INFO ``tcpi_rtt``, Linux).
                            Both RTTs are sampled from at most ``TCP_RTT_SAMPLES``
                            connections per sweep, taken in rotation.
``pings_sent``, ``pings_received``, ``bytes_received``, ``bytes_sent`` (counters)
``handshake_failures{cause}`` accepted connections that ended before their HELLO
                            handshake completed
``local_stalls``            event-loop stalls of the worker itself, forgiven to peers
``workers``, ``worker_restarts`` (from the supervisor)

With ``--resume-window`` (a resumable server), per sweep:

``sessions``                sessions the workers serve, attached or waiting for their
                            client to come back (gauge, summed over live workers)
``session_hijack_attempts`` resumes that named a live session with the wrong token
                            (counter; each is refused exactly like an unknown id)
``sessions_refused``        session HELLOs refused: unknown id, wrong token, store
                            full or unavailable (counter)

Per-connection counters (bytes, pings) are brought up to date by a periodic
sweep (every second in a worker): each counter follows the sum over open
connections plus the totals of ended ones, so it is at most one sweep behind.
The sweep is a few attribute sums over the open connections plus up to
``TCP_RTT_SAMPLES`` RTT samples (a getsockopt each): measured at 4 to 9 ms for
3,000 connections (see the server README section).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from peerwatch.core.verdicts import Cause, Verdict
from peerwatch.kernel.tcpinfo import tcp_rtt_us

if TYPE_CHECKING:
    from peerwatch.aio.connection import Connection
    from peerwatch.aio.server import Server

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Name prefix of the supervisor's multiprocess directories (in the temporary directory).
DIRECTORY_PREFIX = "peerwatch-metrics-"

#: Detection happens at a timeout of tens of ms to minutes; EOF/RESET in microseconds.
DETECTION_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5,
    10.0, 15.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
#: Loopback RTTs are tens of µs, LAN sub-ms, WAN tens to hundreds of ms.
RTT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
)  # fmt: skip

#: Connections whose TCP_INFO is read per sweep (a syscall each), taken in rotation.
TCP_RTT_SAMPLES = 256

#: Per-connection totals the counters follow, as Connection attribute names.
_COUNTED = ("pings_sent", "pings_received", "bytes_in", "bytes_out", "stalls")


class WorkerMetrics:
    """The metrics of one worker process, fed by ``watch(conn)`` and a periodic ``sweep()``.

    Pass ``watch`` as ``peerwatch.serve(on_connection=...)``. In a worker of
    ``run_workers`` the values land in the shared multiprocess directory; with a
    ``registry`` (tests, single-process use) they live in that registry.
    """

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            return Counter(f"peerwatch_{name}", doc, labels, registry=registry)

        self.open = Gauge(
            "peerwatch_connections",
            "Open peerwatch connections (after the handshake).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.accepted = counter("connections_accepted", "Connections that completed the handshake.")
        self.refused = counter("connections_refused", "Connections refused: max_connections.")
        self.verdicts = counter("verdicts", "Connections ended, by verdict cause.", ("cause",))
        self.detection = Histogram(
            "peerwatch_detection_seconds",
            "Time from the last evidence of life from the peer to the verdict (silent_for).",
            ("cause",),
            buckets=DETECTION_BUCKETS,
            registry=registry,
        )
        self.rtt = Histogram(
            "peerwatch_rtt_seconds",
            "Smoothed application round-trip time (PING to PONG), sampled per sweep.",
            buckets=RTT_BUCKETS,
            registry=registry,
        )
        self.tcp_rtt = Histogram(
            "peerwatch_tcp_rtt_seconds",
            "Kernel smoothed RTT (TCP_INFO) of active connections, sampled per sweep.",
            buckets=RTT_BUCKETS,
            registry=registry,
        )
        self.pings_sent = counter("pings_sent", "PING frames sent to peers.")
        self.pings_received = counter("pings_received", "PING frames received from peers.")
        self.bytes_in = counter("bytes_received", "Bytes received from peers (frames included).")
        self.bytes_out = counter("bytes_sent", "Bytes written to peers (frames included).")
        self.handshake_failures = counter(
            "handshake_failures",
            "Accepted connections that ended before completing the HELLO handshake, by cause.",
            ("cause",),
        )
        self.stalls = counter("local_stalls", "Stalls of this process's event loop (forgiven).")
        self.sessions = Gauge(
            "peerwatch_sessions",
            "Resumable sessions served, attached or waiting for their client.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.hijacks = counter(
            "session_hijack_attempts", "Resumes naming a live session with the wrong token."
        )
        self.sessions_refused = counter(
            "sessions_refused", "Session HELLOs refused (unknown, wrong token, store full)."
        )
        # in the order of _COUNTED
        self._counters = (
            self.pings_sent,
            self.pings_received,
            self.bytes_in,
            self.bytes_out,
            self.stalls,
        )
        self._open: set[Connection] = set()
        self._closed_totals = [0] * len(_COUNTED)  # what ended connections did, in full
        self._reported = [0] * len(_COUNTED)  # what the counters already hold
        self._rtt_pings: dict[Connection, int] = {}  # pings_sent when its RTT was last sampled
        self._refused_seen = 0
        self._hijacks_seen = 0
        self._sessions_refused_seen = 0
        self._sweeps = 0
        # pre-create the label values operators alert on, so they read 0 rather than absent
        for cause in Cause:
            self.verdicts.labels(cause.value)

    def accept(self, conn: Connection) -> None:
        """See ``conn`` from its accept on (an ``on_accept`` hook).

        Connections that end before their handshake completes (handshake timeout,
        a peer speaking another protocol) never reach ``watch``; they are counted
        in ``handshake_failures``. Those this side ended (refused, shut down) are not.
        """
        conn.add_verdict_callback(self._on_early_verdict)

    def _on_early_verdict(self, conn: Connection, verdict: Verdict) -> None:
        if conn not in self._open and verdict.cause is not Cause.LOCAL:
            self.handshake_failures.labels(verdict.cause.value).inc()

    def watch(self, conn: Connection) -> None:
        """Start counting ``conn`` (an ``on_connection`` hook)."""
        self._open.add(conn)
        self.open.inc()
        self.accepted.inc()
        conn.add_verdict_callback(self._on_verdict)

    def _on_verdict(self, conn: Connection, verdict: Verdict) -> None:
        self.open.dec()
        self.verdicts.labels(verdict.cause.value).inc()
        if verdict.cause is not Cause.LOCAL:
            self.detection.labels(verdict.cause.value).observe(verdict.silent_for)
        self._open.discard(conn)
        self._rtt_pings.pop(conn, None)
        closed = self._closed_totals
        for i, name in enumerate(_COUNTED):
            closed[i] += getattr(conn, name)

    def sweep(self, server: Server | None = None) -> None:
        """Bring the counters up to date; sample the RTT of a rotating share of connections.

        Counters follow ``sum over open connections + totals of ended ones``: a few
        attribute sums per sweep, no per-connection bookkeeping. RTTs are sampled
        from at most ``TCP_RTT_SAMPLES`` connections per sweep, taken in rotation.
        """
        conns = list(self._open)
        for i, name in enumerate(_COUNTED):
            total = self._closed_totals[i] + sum([getattr(c, name) for c in conns])
            delta = total - self._reported[i]
            if delta > 0:
                self._counters[i].inc(delta)
                self._reported[i] = total
        stride = max(1, -(-len(conns) // TCP_RTT_SAMPLES))
        turn = self._sweeps % stride
        self._sweeps += 1
        rtt_pings = self._rtt_pings
        for conn in conns[turn::stride]:
            pings = conn.pings_sent
            if conn.rtt is not None and rtt_pings.get(conn) != pings:
                rtt_pings[conn] = pings  # a fresh answer since the last sample
                self.rtt.observe(conn.rtt)
            self._observe_tcp_rtt(conn)
        if server is not None and server.refused > self._refused_seen:
            self.refused.inc(server.refused - self._refused_seen)
            self._refused_seen = server.refused
        sessions = getattr(server, "sessions", None)  # a resumable server's
        if sessions is not None:
            self._sweep_sessions(server, len(sessions))

    def _sweep_sessions(self, server: Any, live: int) -> None:
        self.sessions.set(live)
        hijacks, refused = server.hijack_attempts, server.refused_sessions
        if hijacks > self._hijacks_seen:
            self.hijacks.inc(hijacks - self._hijacks_seen)
            self._hijacks_seen = hijacks
        if refused > self._sessions_refused_seen:
            self.sessions_refused.inc(refused - self._sessions_refused_seen)
            self._sessions_refused_seen = refused

    def _observe_tcp_rtt(self, conn: Connection) -> None:
        """One short TCP_INFO read for ``tcpi_rtt`` only (see ``tcp_rtt_us``)."""
        transport = conn.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return
        rtt_us = tcp_rtt_us(sock)
        if rtt_us:
            self.tcp_rtt.observe(rtt_us / 1_000_000)


class MetricsEndpoint:
    """The supervisor's side: a multiprocess directory and an HTTP ``/metrics`` over it.

    ``workers_alive`` and ``restarts`` are read at scrape time from the
    supervisor (a custom collector), so the supervisor itself never writes to
    the multiprocess directory and may have imported prometheus-client before.
    """

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix=DIRECTORY_PREFIX)
        self.workers_alive = 0
        self.restarts = 0
        self._httpd: Any = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0 picks a port); returns the port."""
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        registry.register(_SupervisorCollector(self))
        self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        return int(self._httpd.server_port)

    def worker_exited(self, pid: int) -> None:
        """Drop a dead worker's live gauges (its counters stay: counters never go back)."""
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        shutil.rmtree(self.directory, ignore_errors=True)


class _SupervisorCollector:
    def __init__(self, endpoint: MetricsEndpoint) -> None:
        self._endpoint = endpoint

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily(
            "peerwatch_workers", "Worker processes alive.", value=self._endpoint.workers_alive
        )
        yield CounterMetricFamily(
            "peerwatch_worker_restarts",
            "Worker processes restarted after they died.",
            value=self._endpoint.restarts,
        )


def use_multiprocess_directory(directory: str) -> None:
    """Point this (worker) process at ``directory``; must run before prometheus-client loads."""
    os.environ[MULTIPROC_ENV] = directory
    with contextlib.suppress(ImportError):
        from prometheus_client import values

        # Imported already (e.g. by a user module unpickled first): switch the value class.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
