"""The Prometheus collector: one ``read_host`` per scrape, as metric families.

What is exported (all gauges, names start with ``peerwatch_host_``):

``up``                        1 when sock_diag could be read in this scrape, else 0
``sockets{state}``            every TCP socket of the host's network namespace, by state
``connections{state,verdict,cause}``  judged connections (not LISTEN/TIME_WAIT/SYN_RECV)
``retransmitting_connections`` data in flight, retransmitted at least once
``hung_connections``          SUSPECT or DEAD: the peer stopped acknowledging, answering
                              probes, or reading
``peer_connections{process,peer,port,verdict}``  the ``top`` worst (process, peer address,
                              service port) groups and one ``other`` group
``peer_groups``               how many groups there were before the cut to ``top``
``read_seconds``              how long this reading took (dump, owners, verdicts)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from peerwatch.assessment.model import AssessPolicy, Status
from peerwatch.exporter.host import OwnerCache, read_host

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["HostCollector"]

PREFIX = "peerwatch_host_"


class HostCollector(Collector):
    """Reads the host at every scrape; ``top`` bounds the per-peer label groups."""

    def __init__(
        self, top: int = 20, policy: AssessPolicy | None = None, scrape_port: int | None = None
    ) -> None:
        self.top = top
        self.policy = policy
        self.owners = OwnerCache()
        self.scrape_port = scrape_port  # set once the server listens (see read_host)

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        up = GaugeMetricFamily(PREFIX + "up", "1 when sock_diag could be read in this scrape")
        try:
            reading = read_host(self.policy, self.owners, self.scrape_port)
        except OSError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        sockets = GaugeMetricFamily(
            PREFIX + "sockets", "TCP sockets of this network namespace by state", labels=["state"]
        )
        for state, n in sorted(reading.sockets.items()):
            sockets.add_metric([state.name], n)
        yield sockets
        connections = GaugeMetricFamily(
            PREFIX + "connections",
            "Connections by TCP state and peerwatch verdict with its cause",
            labels=["state", "verdict", "cause"],
        )
        for (state, status, cause), n in sorted(reading.connections.items()):
            connections.add_metric([state.name, status.value, cause.value], n)
        yield connections
        yield GaugeMetricFamily(
            PREFIX + "retransmitting_connections",
            "Connections with data in flight retransmitted at least once",
            value=reading.retransmitting,
        )
        yield GaugeMetricFamily(
            PREFIX + "hung_connections",
            "Connections whose peer stopped acknowledging, answering probes or reading",
            value=reading.hung,
        )
        peers = GaugeMetricFamily(
            PREFIX + "peer_connections",
            "Connections per process, peer address and service port (worst groups, then other)",
            labels=["process", "peer", "port", "verdict"],
        )
        for (process, peer, port), counts in reading.groups.top(self.top):
            for status in Status:
                peers.add_metric([process, peer, port, status.value], counts[status])
        yield peers
        yield GaugeMetricFamily(
            PREFIX + "peer_groups",
            "Process/peer/port groups before the cut to the top ones",
            value=len(reading.groups.counts),
        )
        yield GaugeMetricFamily(
            PREFIX + "read_seconds",
            "Time this scrape took to read and judge the sockets",
            value=time.perf_counter() - started,
        )
