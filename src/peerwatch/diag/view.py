"""What ``peerwatch inspect`` shows: rows of (socket, owner, verdict), filtered, as a table or JSON.

A row joins three sources read at one moment: the sock_diag record, the
processes holding its inode, and the ``assess`` verdict on its figures. Rows
are sorted worst first, so the connection to look at at 3 a.m. is on top.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from peerwatch.assess_rules import assess_info
from peerwatch.assessment import Assessment, AssessPolicy, Status, Timer, format_duration
from peerwatch.diag.owners import Owner, socket_owners
from peerwatch.diag.sockdiag import SockRecord, read_sockets
from peerwatch.tcpinfo import TcpState

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["DEFAULT_HIDDEN", "Filters", "Row", "json_lines", "render_table", "snapshot", "summary"]

#: Shown only when asked for (--all or --state): they are not connections anyone holds.
DEFAULT_HIDDEN = frozenset({TcpState.LISTEN, TcpState.TIME_WAIT, TcpState.NEW_SYN_RECV})

_STATUS_STYLE = {Status.ALIVE: "green", Status.SUSPECT: "yellow", Status.DEAD: "bold red"}


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
class Filters:
    """Which rows to keep. Empty sets and None mean "no filter" (states: the default set)."""

    states: frozenset[TcpState] | None = None  # None: all but DEFAULT_HIDDEN
    ports: frozenset[int] = field(default_factory=frozenset)  # local or remote port
    addresses: frozenset[str] = field(default_factory=frozenset)  # local or remote address
    process: str | None = None  # a pid, or part of the command name
    statuses: frozenset[Status] = field(default_factory=frozenset)

    def keep_record(self, record: SockRecord) -> bool:
        if self.states is None:
            if record.state in DEFAULT_HIDDEN:
                return False
        elif record.state not in self.states:
            return False
        if self.ports and not {record.local[1], record.remote[1]} & self.ports:
            return False
        return not self.addresses or bool({record.local[0], record.remote[0]} & self.addresses)

    def keep_row(self, row: Row) -> bool:
        if self.statuses and row.verdict.status not in self.statuses:
            return False
        if self.process is None:
            return True
        if self.process.isdigit():
            return any(o.pid == int(self.process) for o in row.owners)
        return any(self.process in o.command for o in row.owners)


def snapshot(filters: Filters, policy: AssessPolicy | None = None) -> list[Row]:
    """Read every socket once and return the rows that pass the filters, worst first."""
    wanted = filters.states
    if wanted is None:
        wanted = frozenset(TcpState) - DEFAULT_HIDDEN
    records = [r for r in read_sockets(wanted) if filters.keep_record(r)]
    owners = socket_owners() if records else {}
    rows = [
        Row(r, tuple(owners.get(r.inode, ())) if r.inode else (), assess_info(r.facts(), policy))
        for r in records
    ]
    rows = [row for row in rows if filters.keep_row(row)]
    rows.sort(key=lambda row: (-row.verdict.status.rank, row.record.state, row.record.local))
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
    """One JSON object per connection per line, stamped with the time of the snapshot."""
    stamp = time.time() if taken_at is None else taken_at
    for row in rows:
        yield json.dumps({"time": round(stamp, 3), **row.as_dict()}, sort_keys=False)


_TIMER_SHORT = {
    Timer.RETRANSMIT: "retrans",
    Timer.KEEPALIVE: "keepalive",
    Timer.TIME_WAIT: "timewait",
    Timer.ZERO_WINDOW_PROBE: "zwprobe",
}


def _timer_text(record: SockRecord) -> str:
    """The pending timer, when it fires, and how many times it already fired (as ``ss -o``)."""
    if record.timer is Timer.NONE:
        return "-"
    text = f"{_TIMER_SHORT[record.timer]} {format_duration(record.timer_expires_ms / 1000)}"
    if record.timer_retrans:
        text += f" ({record.timer_retrans})"
    return text


def _rtt_text(rtt_us: int) -> str:
    return f"{rtt_us} µs" if rtt_us < 1000 else f"{rtt_us / 1000:.1f} ms"


def render_table(rows: list[Row], title: str | None = None) -> Table:
    """A rich table: one line of figures per connection and its verdict with the reason."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, caption=summary(rows), expand=False, pad_edge=False)
    for name, justify in (
        ("Verdict", "left"),
        ("State", "left"),
        ("Local", "left"),
        ("Peer", "left"),
        ("Process", "left"),
        ("Rq/Sq", "right"),
        ("Timer", "left"),
        ("RTT", "right"),
        ("Retr", "right"),
        ("Heard", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    table.add_column("Why", overflow="fold", min_width=30, ratio=1)
    for row in rows:
        info = row.record.info
        verdict = row.verdict
        rtt = _rtt_text(info.rtt_us) if info is not None and info.rtt_us else "-"
        retr = f"{info.retransmits}/{info.total_retrans}" if info is not None else "-"
        heard = "-" if verdict.silent_for is None else format_duration(verdict.silent_for)
        table.add_row(
            Text(verdict.status.value, style=_STATUS_STYLE[verdict.status]),
            row.record.state.name,
            row.record.local_text,
            row.record.remote_text,
            row.process_text,
            f"{row.record.recv_queue}/{row.record.send_queue}",
            _timer_text(row.record),
            rtt,
            retr,
            heard,
            f"{verdict.cause.value}: {verdict.detail}",
        )
    return table
