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

from peerwatch.assessment.model import AssessPolicy, Finding, Status
from peerwatch.assessment.rules import RULE_FIELDS, assess_info
from peerwatch.diag.owners import Owner, socket_owners
from peerwatch.diag.sockdiag import read_sockets
from peerwatch.diag.view import DEFAULT_HIDDEN
from peerwatch.exporter.groups import PeerGroups
from peerwatch.gcpause import gc_paused
from peerwatch.kernel.tcpinfo import TcpState

__all__ = ["HUNG_CAUSES", "HostReading", "OwnerCache", "read_host"]

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


class OwnerCache:
    """inode -> owners, rescanned from /proc only when a socket it does not know appears.

    The scan reads every descriptor of every process on the host (about 100 ms
    with 10,000 sockets), while the sockets of a steady host are the same from
    one scrape to the next: an inode, once seen, keeps its owner until it is
    gone (a descriptor passed to another process is the rare exception, and
    the next rescan corrects it). Inodes no longer dumped are dropped.
    """

    def __init__(self) -> None:
        self.owners: dict[int, list[Owner]] = {}
        self.scans = 0
        self._labels: dict[int, str] = {}  # inode -> its process label, as owners changes

    def label(self, inode: int) -> str:
        """The ``process`` label of the socket ``inode`` (after ``lookup``), computed once."""
        label = self._labels.get(inode)
        if label is None:
            label = self._labels[inode] = _process(self.owners.get(inode, ()) if inode else ())
        return label

    def lookup(self, inodes: set[int]) -> dict[int, list[Owner]]:
        if not inodes <= self.owners.keys():
            scanned = socket_owners()
            self.scans += 1
            # sockets no process holds any more (or not visible to us) are remembered too,
            # as owned by nobody, so they do not trigger a rescan at every scrape
            self.owners = {inode: scanned.get(inode, []) for inode in inodes}
            self._labels = {}
        elif len(self.owners) > len(inodes):
            self.owners = {inode: self.owners[inode] for inode in inodes}
            self._labels = {i: label for i, label in self._labels.items() if i in self.owners}
        return self.owners


def read_host(
    policy: AssessPolicy | None = None,
    owners: OwnerCache | None = None,
    scrape_port: int | None = None,
) -> HostReading:
    """Dump, judge and count every TCP socket of this network namespace.

    ``scrape_port`` is the exporter's own port: the scrape's connection is new at
    every scrape (the HTTP server closes it after each answer), so it must not
    make the owner cache rescan /proc each time; it is counted like any other,
    its owner named only if the cache already knows it. Raises ``OSError``
    when sock_diag is refused.
    """
    with gc_paused():  # 10,000 sockets: tens of thousands of acyclic objects
        return _read_host(policy, owners, scrape_port)


def _read_host(
    policy: AssessPolicy | None, owners: OwnerCache | None, scrape_port: int | None
) -> HostReading:
    reading = HostReading()
    policy = policy or AssessPolicy()
    records = read_sockets(tcp_info_fields=RULE_FIELDS)  # verdicts only: no other field
    inodes = {
        r.inode
        for r in records
        if r.inode
        and r.state not in DEFAULT_HIDDEN
        and scrape_port not in (r.local[1], r.remote[1])
    }
    owners = owners or OwnerCache()
    owners.lookup(inodes)
    listening = {r.local for r in records if r.state is TcpState.LISTEN}
    # a listener bound to every address of its family accepts on any local address
    wildcard_ports = {port for address, port in listening if address in _WILDCARDS}
    for record in records:
        reading.sockets[record.state] += 1
        if record.state in DEFAULT_HIDDEN:
            continue
        verdict = assess_info(record.facts(), policy, figures=False)
        reading.connections[record.state, verdict.status, verdict.cause] += 1
        info = record.info
        if info is not None and info.retransmits > 0 and info.unacked > 0:
            reading.retransmitting += 1
        if verdict.status is not Status.ALIVE and verdict.cause in HUNG_CAUSES:
            reading.hung += 1
        # the service port: ours if we listen on it (an inbound connection), else the peer's
        peer, remote_port = record.remote
        local = record.local
        accepted = local in listening or local[1] in wildcard_ports  # one of our listeners'
        port = local[1] if accepted else remote_port
        reading.groups.add((owners.label(record.inode), peer, str(port)), verdict.status)
    return reading


_WILDCARDS = ("0.0.0.0", "::")


def _process(owners: list[Owner] | tuple[()]) -> str:
    """The command names holding the socket (comm, not pid: pids would churn the labels)."""
    return ",".join(sorted({o.command for o in owners})) or "-"
