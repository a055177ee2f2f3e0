"""What ``peerwatch inspect`` shows: rows of (socket, owner, verdict), filtered and sorted.

A row joins three sources read at one moment: the sock_diag record, the
processes holding its inode, and the ``assess`` verdict on its figures. Rows
are sorted worst first by default, so the connection to look at at 3 a.m. is on
top; ``SORTS`` names the other orders. The table itself is ``diag.table``; JSON
lines follow the CLI's one convention (``cli.jsonout``, docs/JSON.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from peerwatch.assessment.model import Assessment, AssessPolicy, Status
from peerwatch.assessment.rules import assess_info
from peerwatch.diag.owners import Owner, socket_owners
from peerwatch.diag.sockdiag import SockRecord, read_sockets
from peerwatch.frozen import build
from peerwatch.gcpause import gc_paused
from peerwatch.kernel.tcpinfo import TcpState

__all__ = [
    "DEFAULT_HIDDEN",
    "SORTS",
    "Filters",
    "PeerMatch",
    "Row",
    "json_lines",
    "snapshot",
    "summary",
]

#: Shown only when asked for (--all or --state): they are not connections anyone holds.
DEFAULT_HIDDEN = frozenset({TcpState.LISTEN, TcpState.TIME_WAIT, TcpState.NEW_SYN_RECV})


@dataclass(frozen=True)
class Row:
    record: SockRecord
    owners: tuple[Owner, ...]
    verdict: Assessment

    @property
    def process_text(self) -> str:
        return ",".join(str(o) for o in self.owners) or "-"

    def as_dict(self) -> dict[str, object]:
        return {
            **self.record.as_dict(),
            "process": [{"pid": o.pid, "command": o.command} for o in self.owners],
            "verdict": self.verdict.as_dict(),
        }


@dataclass(frozen=True)
class PeerMatch:
    """``--peer``: the remote end is one of ``addresses`` (None: any) on ``port`` (None: any)."""

    addresses: frozenset[str] | None
    port: int | None

    def matches(self, remote: tuple[str, int]) -> bool:
        if self.port is not None and remote[1] != self.port:
            return False
        return self.addresses is None or remote[0] in self.addresses


@dataclass(frozen=True)
class Filters:
    """Which rows to keep. Empty sets and None mean "no filter" (states: the default set)."""

    states: frozenset[TcpState] | None = None  # None: all but DEFAULT_HIDDEN
    ports: frozenset[int] = field(default_factory=frozenset)  # local or remote port
    addresses: frozenset[str] = field(default_factory=frozenset)  # local or remote address
    process: str | None = None  # a pid, or part of the command name
    statuses: frozenset[Status] = field(default_factory=frozenset)
    pids: frozenset[int] = field(default_factory=frozenset)  # held by one of these processes
    peers: tuple[PeerMatch, ...] = ()  # the remote end matches one of these

    def keep_record(self, record: SockRecord) -> bool:
        if self.states is None:
            if record.state in DEFAULT_HIDDEN:
                return False
        elif record.state not in self.states:
            return False
        if self.ports and not {record.local[1], record.remote[1]} & self.ports:
            return False
        if self.peers and not any(peer.matches(record.remote) for peer in self.peers):
            return False
        return not self.addresses or bool({record.local[0], record.remote[0]} & self.addresses)

    def keep_row(self, row: Row) -> bool:
        if self.statuses and row.verdict.status not in self.statuses:
            return False
        if self.pids and not any(o.pid in self.pids for o in row.owners):
            return False
        if self.process is None:
            return True
        if self.process.isdigit():
            return any(o.pid == int(self.process) for o in row.owners)
        return any(self.process in o.command for o in row.owners)


def _worst_first(row: Row) -> tuple[int, int, tuple[str, int]]:
    return (-row.verdict.status.rank, row.record.state, row.record.local)


def _silent_longest(row: Row) -> float:
    silent = row.verdict.silent_for
    return -1.0 if silent is None else silent


#: ``--sort`` orders; ties keep the worst-first order (Python's sort is stable). The
#: figures sort largest first: the connection furthest from healthy comes first.
SORTS: dict[str, tuple[Callable[[Row], object], bool]] = {
    "verdict": (_worst_first, False),
    "state": (lambda row: row.record.state, False),
    "local": (lambda row: (row.record.family, row.record.local), False),
    "peer": (lambda row: (row.record.family, row.record.remote), False),
    "process": (lambda row: [(o.command, o.pid) for o in row.owners], False),
    "silent": (_silent_longest, True),
    "queues": (lambda row: row.record.recv_queue + row.record.send_queue, True),
    "retrans": (lambda row: row.record.info.total_retrans if row.record.info else -1, True),
    "rtt": (lambda row: row.record.info.rtt_us if row.record.info else -1, True),
}


def snapshot(
    filters: Filters,
    policy: AssessPolicy | None = None,
    sort: str = "verdict",
    *,
    figures: bool = True,
    tcp_info_fields: frozenset[str] | None = None,
) -> list[Row]:
    """Read every socket once and return the rows that pass the filters, in ``sort`` order.

    For the table, which shows the verdict and its reason but not the evidence nor every
    TCP_INFO field: ``figures=False`` leaves the figures out of each verdict's evidence (a
    third of the verdict's cost), and ``tcp_info_fields`` decodes only those fields (at
    least ``assess_rules.RULE_FIELDS`` and what the sort reads).
    """
    with gc_paused():  # 10,000 sockets: tens of thousands of acyclic objects
        return _snapshot(filters, policy, sort, figures, tcp_info_fields)


def _snapshot(
    filters: Filters,
    policy: AssessPolicy | None,
    sort: str,
    figures: bool,
    tcp_info_fields: frozenset[str] | None,
) -> list[Row]:
    wanted = filters.states
    if wanted is None:
        wanted = frozenset(TcpState) - DEFAULT_HIDDEN
    policy = policy if policy is not None else AssessPolicy()  # validated once, not per row
    records = [
        r for r in read_sockets(wanted, tcp_info_fields=tcp_info_fields) if filters.keep_record(r)
    ]
    owners = socket_owners() if records else {}
    rows = [
        build(  # not the frozen __init__: one row per socket
            Row,
            {
                "record": r,
                "owners": tuple(owners.get(r.inode, ())) if r.inode else (),
                "verdict": assess_info(r.facts(), policy, figures=figures),
            },
        )
        for r in records
    ]
    rows = [row for row in rows if filters.keep_row(row)]
    rows.sort(key=_worst_first)
    if sort != "verdict":
        key, largest_first = SORTS[sort]
        rows.sort(key=key, reverse=largest_first)  # type: ignore[arg-type]
    return rows


def summary(rows: Iterable[Row]) -> str:
    counts = {status: 0 for status in Status}
    total = 0
    for row in rows:
        counts[row.verdict.status] += 1
        total += 1
    parts = ", ".join(f"{counts[s]} {s.value}" for s in Status)
    return f"{total} connection{'s' if total != 1 else ''}: {parts}"


def json_lines(rows: Iterable[Row], taken_at: float | None = None) -> Iterator[str]:
    """One ``connection`` JSON line per row, all stamped with the time of the snapshot."""
    from peerwatch.cli.jsonout import json_line

    for row in rows:
        yield json_line("connection", row.as_dict(), taken_at)
