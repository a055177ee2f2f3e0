"""``peerwatch exporter``: what inspect sees, as Prometheus metrics, scraped by a real Prometheus.

Connections the test put into CLOSE_WAIT on its own loopback address must show
up in the exporter's metrics with their verdict, grouped by process, peer and
service port; the label groups stay bounded however many peers there are; and
a real Prometheus server (the Debian package) scraping the exporter every
second answers a query for those dead connections.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_server import PrometheusServer

from bad_states import info_of, private_loopback, wait_for
from diag_netns import NetnsHost
from peerwatch.assessment.model import AssessPolicy, Status
from peerwatch.exporter.groups import OTHER, PeerGroups
from peerwatch.kernel.tcpinfo import TcpState

prometheus_client = pytest.importorskip("prometheus_client")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sock_diag is Linux")

COMM = Path("/proc/self/comm").read_text().strip()
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(top: int = 1000, **policy: float) -> Samples:
    """One collection, as {(name, sorted labels): value}."""
    from peerwatch.exporter.collector import HostCollector

    registry = prometheus_client.CollectorRegistry()
    registry.register(HostCollector(top=top, policy=AssessPolicy(**policy)))
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def peer_count(samples: Samples, peer: str, port: int, verdict: str, process: str = COMM) -> float:
    labels = (("peer", peer), ("port", str(port)), ("process", process), ("verdict", verdict))
    return samples.get(("peerwatch_host_peer_connections", labels), 0.0)


@pytest.fixture
def close_waits() -> Iterator[tuple[str, int]]:
    """Three clients of this process in CLOSE_WAIT to one server port on a private address."""
    addr = private_loopback()
    with contextlib.ExitStack() as stack:
        lsock = stack.enter_context(socket.socket())
        lsock.bind((addr, 0))
        lsock.listen(8)
        port = lsock.getsockname()[1]
        clients = []
        for _ in range(3):
            client = stack.enter_context(socket.create_connection((addr, port), timeout=5))
            server, _ = lsock.accept()
            server.close()
            clients.append(client)
        for client in clients:
            wait_for(lambda c=client: info_of(c).state is TcpState.CLOSE_WAIT, what="CLOSE_WAIT")
        yield addr, port


def test_close_waits_are_counted_by_verdict_and_group(close_waits: tuple[str, int]) -> None:
    addr, port = close_waits
    lenient = scrape()
    assert peer_count(lenient, addr, port, "SUSPECT") == 3
    assert peer_count(lenient, addr, port, "DEAD") == 0
    strict = scrape(close_wait_after=0)
    assert peer_count(strict, addr, port, "DEAD") == 3
    dead_close_waits = strict[
        ("peerwatch_host_connections",
         (("cause", "PEER_CLOSED"), ("state", "CLOSE_WAIT"), ("verdict", "DEAD")))
    ]  # fmt: skip
    assert dead_close_waits >= 3
    assert strict[("peerwatch_host_sockets", (("state", "CLOSE_WAIT"),))] >= 3
    assert strict[("peerwatch_host_up", ())] == 1


def test_label_groups_are_bounded_and_nothing_is_lost(close_waits: tuple[str, int]) -> None:
    samples = scrape(top=1, close_wait_after=0)
    peers = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "peerwatch_host_peer_connections"
    }
    keys = {tuple(v for k, v in labels if k != "verdict") for labels in peers}
    # this test's group and every other connection of the host folded into "other"
    assert samples[("peerwatch_host_peer_groups", ())] >= 2
    assert len(keys) == 2 and (OTHER, OTHER, OTHER) in keys
    assert len(peers) == 2 * len(Status)
    judged = sum(v for (name, _), v in samples.items() if name == "peerwatch_host_connections")
    assert sum(peers.values()) == judged


def test_top_k_ranks_dead_then_suspect_then_size_and_sums_the_rest() -> None:
    groups = PeerGroups()
    for _ in range(50):
        groups.add(("big", "10.0.0.1", "80"), Status.ALIVE)
    groups.add(("stuck", "10.0.0.2", "5432"), Status.DEAD)
    groups.add(("slow", "10.0.0.3", "6379"), Status.SUSPECT)
    for i in range(100):
        groups.add(("many", f"10.1.0.{i}", "443"), Status.ALIVE)
    top = groups.top(2)
    assert [key for key, _ in top] == [
        ("stuck", "10.0.0.2", "5432"),
        ("slow", "10.0.0.3", "6379"),
        (OTHER, OTHER, OTHER),
    ]
    assert top[-1][1] == {Status.ALIVE: 150, Status.SUSPECT: 0, Status.DEAD: 0}
    assert len(groups.top(1000)) == 103  # nothing left out: no "other"


#: Three clients in CLOSE_WAIT to one server on 127.0.0.1 of the namespace it runs in.
CLOSE_WAITS = """
import socket, sys, time
listener = socket.create_server(("127.0.0.1", 0))
clients = []
for _ in range(3):
    clients.append(socket.create_connection(listener.getsockname()))
    listener.accept()[0].close()
print("ready", listener.getsockname()[1], flush=True)
time.sleep(120)
"""


@pytest.mark.slow
@pytest.mark.netns
def test_real_prometheus_scrapes_the_dead_connections(
    netns_host: NetnsHost, tmp_path: Path
) -> None:
    """All in a namespace of their own, so a scrape reads a handful of sockets and fits in the
    1 s scrape interval even while other work on the machine holds thousands of sockets."""
    holder = netns_host.spawn(sys.executable, "-c", CLOSE_WAITS, stdout=subprocess.PIPE)
    assert holder.stdout is not None
    word, port = holder.stdout.readline().split()
    assert word == b"ready"
    exporter = netns_host.spawn(
        sys.executable, "-m", "peerwatch", "exporter", "--port", "0", "--top", "1000",
        "--close-wait-after", "0", stdout=subprocess.PIPE,
    )  # fmt: skip
    assert exporter.stdout is not None
    line = exporter.stdout.readline().decode()
    assert line.startswith("peerwatch exporter: metrics on http://127.0.0.1:"), line
    target = line.split("http://")[1].split("/")[0]
    prometheus = PrometheusServer.start(
        tmp_path, target, address=f"{netns_host.addr}:9090", spawn=netns_host.spawn
    )
    try:
        selector = f'peer="127.0.0.1",port="{port.decode()}",verdict="DEAD"'
        promql = f"sum(peerwatch_host_peer_connections{{{selector}}})"
        deadline = time.monotonic() + 30
        values: list[str] = []
        while time.monotonic() < deadline:
            values = [str(r["value"][1]) for r in prometheus.query(promql)]  # type: ignore[index]
            if values == ["3"]:
                break
            time.sleep(0.25)
        assert values == ["3"], prometheus.log.read_text()[-2000:]
        (up,) = prometheus.query('up{job="peerwatch-host"}')
        assert up["value"][1] == "1"  # type: ignore[index]
        (dead,) = prometheus.query(
            'peerwatch_host_connections{state="CLOSE_WAIT",verdict="DEAD",cause="PEER_CLOSED"}'
        )
        assert dead["value"][1] == "3"  # type: ignore[index]
    finally:
        prometheus.stop()


def test_owner_cache_rescans_only_for_sockets_it_has_not_seen() -> None:
    import os

    from peerwatch.exporter.host import OwnerCache

    def inode(sock: socket.socket) -> int:
        return os.fstat(sock.fileno()).st_ino

    cache = OwnerCache()
    with socket.socket() as first, socket.socket() as second:
        owners = cache.lookup({inode(first)})
        assert [o.pid for o in owners[inode(first)]] == [os.getpid()]
        assert cache.lookup({inode(first)}) is owners and cache.scans == 1
        owners = cache.lookup({inode(first), inode(second)})
        assert cache.scans == 2 and [o.pid for o in owners[inode(second)]] == [os.getpid()]
        cache.lookup({inode(second)})  # the first one is gone from the dump: forgotten
        assert cache.scans == 2 and set(cache.owners) == {inode(second)}


def test_service_port_ignores_a_listener_on_the_same_port_of_another_address() -> None:
    """A client's ephemeral port may equal a port someone listens on elsewhere on the host;
    the connection is still outbound and grouped by the port it connects to."""
    addr = private_loopback()
    with socket.create_server((addr, 0)) as server_side:
        port = server_side.getsockname()[1]
        with socket.create_connection((addr, port), timeout=5) as client:
            accepted, _ = server_side.accept()
            with accepted:
                host, ephemeral = client.getsockname()[:2]
                other = "127.0.0.2" if host != "127.0.0.2" else "127.0.0.3"
                with socket.create_server((other, ephemeral)):  # same number, other address
                    samples = scrape()
    # the client's end and the accepted end, both grouped under the server's port
    assert peer_count(samples, addr, port, "ALIVE") == 1
    assert peer_count(samples, host, port, "ALIVE") == 1
    assert peer_count(samples, addr, ephemeral, "ALIVE") == 0
