"""One reading of this host's TCP sockets for the exporter: counts, verdicts, groups.

The same sources and rules as ``peerwatch inspect`` (sock_diag dump, owners
from /proc, ``assess_info``), read once per scrape and reduced to counts at
once, so memory does not grow with the number of sockets beyond one dump.
Listening, TIME_WAIT and embryonic sockets are counted by state but not
judged (inspect hides them by default for the same reason: no one holds them
as a connection).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from peerwatch.assess_rules import assess_info
from peerwatch.assessment import AssessPolicy, Finding, Status
from peerwatch.diag.owners import Owner, socket_owners
from peerwatch.diag.sockdiag import read_sockets
from peerwatch.diag.view import DEFAULT_HIDDEN
from peerwatch.exporter.groups import PeerGroups
from peerwatch.tcpinfo import TcpState

__all__ = ["HUNG_CAUSES", "HostReading", "read_host"]

#: The peer stopped acknowledging, answering probes, or reading: the connection hangs.
HUNG_CAUSES = frozenset(
    {Finding.NOT_ACKNOWLEDGING, Finding.PROBES_UNANSWERED, Finding.PEER_NOT_READING}
)


@dataclass
class HostReading:
    sockets: Counter[TcpState] = field(default_factory=Counter)  # every socket, by state
    # judged connections by (state, verdict, cause)
    connections: Counter[tuple[TcpState, Status, Finding]] = field(default_factory=Counter)
    retransmitting: int = 0  # data in flight and retransmitted at least once
    hung: int = 0  # SUSPECT or DEAD for a cause in HUNG_CAUSES
    groups: PeerGroups = field(default_factory=PeerGroups)


def read_host(policy: AssessPolicy | None = None) -> HostReading:
    """Dump, judge and count every TCP socket of this network namespace.

    Raises ``OSError`` when sock_diag is refused.
    """
    reading = HostReading()
    records = read_sockets()
    owners = socket_owners()
    listening_ports = {r.local[1] for r in records if r.state is TcpState.LISTEN}
    for record in records:
        reading.sockets[record.state] += 1
        if record.state in DEFAULT_HIDDEN:
            continue
        verdict = assess_info(record.facts(), policy)
        reading.connections[record.state, verdict.status, verdict.cause] += 1
        info = record.info
        if info is not None and info.retransmits > 0 and info.unacked > 0:
            reading.retransmitting += 1
        if verdict.status is not Status.ALIVE and verdict.cause in HUNG_CAUSES:
            reading.hung += 1
        # the service port: ours if we listen on it (an inbound connection), else the peer's
        local_port, (peer, remote_port) = record.local[1], record.remote
        port = local_port if local_port in listening_ports else remote_port
        process = _process(owners.get(record.inode, ()) if record.inode else ())
        reading.groups.add((process, peer, str(port)), verdict.status)
    return reading


def _process(owners: list[Owner] | tuple[()]) -> str:
    """The command names holding the socket (comm, not pid: pids would churn the labels)."""
    return ",".join(sorted({o.command for o in owners})) or "-"
