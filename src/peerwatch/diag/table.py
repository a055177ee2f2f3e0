"""The ``peerwatch inspect`` table: the columns that fit, and always the verdict and why.

Columns carry ``ss``'s names and meanings, so an operator who lives in ``ss -tinpo``
reads them without a legend: ``ESTAB``/``CLOSE-WAIT`` states, ``Recv-Q``/``Send-Q``,
``timer`` as ``ss -o`` prints it (``on`` = retransmit, ``persist`` = zero-window
probe), ``rtt`` as ``rtt/rttvar`` in ms, ``retrans`` as ``retrans:a/b`` (segments
retransmitted and not yet acknowledged / retransmitted over the connection's life),
``ssthresh`` only when the kernel has one (before the first loss it holds an
"infinite" sentinel, which ``ss`` omits and this shows as ``-``).

When the width is short, whole columns are dropped by priority (``Columns``) and
never cut: a truncated address or port is worse than none. The "why" gets the
rest of the line and wraps onto continuation lines under itself.

Hand-written rather than ``rich.Table``: laying out the same 2,000 rows took rich
5.0 s of CPU and this module 0.02-0.04 s (0.07-0.10 s at 80 columns, where the why
wraps), measured side by side on a loaded 2-core machine; rich measures every cell
of every row through its renderable protocol, and ``--watch`` must redraw 10,000
sockets every second.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from peerwatch.assessment.model import Finding, Status, Timer, format_duration
from peerwatch.assessment.rules import RULE_FIELDS
from peerwatch.gcpause import gc_paused
from peerwatch.kernel.tcpinfo import TcpState

if TYPE_CHECKING:
    from peerwatch.diag.view import Row

__all__ = ["COLUMNS", "Column", "Layout", "Rendered", "layout", "render", "ss_state"]

#: ss's short state names (misc/ss.c ``sstate_name``), so the two tools read alike.
_SS_STATE = {
    TcpState.ESTABLISHED: "ESTAB",
    TcpState.SYN_SENT: "SYN-SENT",
    TcpState.SYN_RECV: "SYN-RECV",
    TcpState.FIN_WAIT1: "FIN-WAIT-1",
    TcpState.FIN_WAIT2: "FIN-WAIT-2",
    TcpState.TIME_WAIT: "TIME-WAIT",
    TcpState.CLOSE: "UNCONN",
    TcpState.CLOSE_WAIT: "CLOSE-WAIT",
    TcpState.LAST_ACK: "LAST-ACK",
    TcpState.LISTEN: "LISTEN",
    TcpState.CLOSING: "CLOSING",
    TcpState.NEW_SYN_RECV: "SYN-RECV",
    TcpState.UNKNOWN: "UNKNOWN",
}

#: ss -o's timer names (misc/ss.c ``tmr_name``).
_SS_TIMER = {
    Timer.RETRANSMIT: "on",
    Timer.KEEPALIVE: "keepalive",
    Timer.TIME_WAIT: "timewait",
    Timer.ZERO_WINDOW_PROBE: "persist",
}

#: an enum's .value is a Python-level property: a dict look-up is a fifth of its cost,
#: and the table asks two per row
_TEXT: dict[Status | Finding, str] = {
    **{s: s.value for s in Status},
    **{f: f.value for f in Finding},
}
_COLOR = {Status.ALIVE: "\x1b[32m", Status.SUSPECT: "\x1b[33m", Status.DEAD: "\x1b[1;31m"}
_RESET = "\x1b[0m"

#: The "why" gets at least this many columns, or this share of a wider terminal,
#: before any other column: other columns are dropped first. At 80 columns that
#: keeps verdict, state, peer and how long the peer has been silent beside it.
WHY_MIN_WIDTH = 32
WHY_SHARE = 0.4
_GAP = "  "


def ss_state(state: TcpState) -> str:
    # not .get(state, state.name): that reads the enum's name (a slow property, 10 us)
    # for every row, even though every state is in the table
    return _SS_STATE.get(state) or state.name


def _process(row: Row) -> str:
    owners = row.owners
    if not owners:
        return "-"
    first = f"{_printable(owners[0].command)}[{owners[0].pid}]"
    return first if len(owners) == 1 else f"{first}+{len(owners) - 1}"


def _printable(text: str) -> str:
    """Any user may name a process "\x1b[2J": control characters are shown as "?"."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def _timer(row: Row) -> str:
    record = row.record
    if record.timer is Timer.NONE:
        return "-"
    expires = format_duration(record.timer_expires_ms / 1000).replace(" ", "")
    return f"{_SS_TIMER[record.timer]},{expires},{record.timer_retrans}"


def _rtt(row: Row) -> str:
    info = row.record.info
    if info is None or not info.rtt_us:
        return "-"
    return f"{info.rtt_us / 1000:g}/{info.rttvar_us / 1000:g}"


def _retrans(row: Row) -> str:
    info = row.record.info
    if info is None or not (info.retrans or info.total_retrans):
        return "-"
    return f"{info.retrans}/{info.total_retrans}"


def _ssthresh(row: Row) -> str:
    info = row.record.info
    ssthresh = None if info is None else info.ssthresh
    return "-" if ssthresh is None else str(ssthresh)


def _silent(row: Row) -> str:
    silent = row.verdict.silent_for
    return "-" if silent is None else format_duration(silent).replace(" ", "")


def _why(row: Row) -> str:
    return f"{_TEXT[row.verdict.cause]}: {row.verdict.detail}"


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Row], str]
    keep: int  # lower is kept longer when the width is short; 0 is never dropped
    right: bool = False  # numbers align right, as in ss


#: In display order. ``keep`` says what goes first on a narrow terminal: the figures
#: behind the verdict (ssthresh, rtt, timer) before who and where (process, peer).
COLUMNS: tuple[Column, ...] = (
    Column("Verdict", lambda row: _TEXT[row.verdict.status], keep=0),
    Column("State", lambda row: ss_state(row.record.state), keep=2),
    Column("Local", lambda row: row.record.local_text, keep=8),
    Column("Peer", lambda row: row.record.remote_text, keep=1),
    Column("Process", _process, keep=4),
    Column("Recv-Q", lambda row: str(row.record.recv_queue), keep=9, right=True),
    Column("Send-Q", lambda row: str(row.record.send_queue), keep=6, right=True),
    Column("Silent", _silent, keep=3, right=True),
    Column("retrans", _retrans, keep=5, right=True),
    Column("timer", _timer, keep=10),
    Column("rtt", _rtt, keep=11, right=True),
    Column("ssthresh", _ssthresh, keep=12, right=True),
)
_WHY_HEADER = "Why"

#: The TCP_INFO fields the table reads: its columns', the verdict's and the sorts' (view.SORTS).
#: ``snapshot(..., tcp_info_fields=TCP_INFO_FIELDS)`` decodes only these.
TCP_INFO_FIELDS = RULE_FIELDS | {"rtt_us", "rttvar_us", "retrans", "total_retrans", "snd_ssthresh"}


@dataclass(frozen=True)
class Layout:
    columns: tuple[Column, ...]  # the ones shown, in display order
    widths: tuple[int, ...]
    why_width: int | None  # None: unbounded (no wrapping)
    hidden: tuple[str, ...]  # headers of the columns dropped for width


def layout(cells: Sequence[Sequence[str]], width: int | None) -> Layout:
    """Choose the columns that fit ``width`` (None: all), given every row's cells."""
    widths = [len(c.header) for c in COLUMNS]
    if cells:
        widths = [
            max(header, *map(len, column))
            for header, column in zip(widths, zip(*cells, strict=True), strict=True)
        ]
    shown = list(range(len(COLUMNS)))
    if width is None:
        return Layout(COLUMNS, tuple(widths), None, ())

    def used() -> int:
        return sum(widths[i] + len(_GAP) for i in shown)

    why_floor = max(WHY_MIN_WIDTH, int(width * WHY_SHARE))
    by_drop_order = sorted(shown, key=lambda i: -COLUMNS[i].keep)
    dropped = []
    for i in by_drop_order:
        if width - used() >= why_floor or COLUMNS[i].keep == 0:
            break
        shown.remove(i)
        dropped.append(i)
    for i in reversed(dropped):  # a narrower, more telling column may fit in what is left
        if width - used() - widths[i] - len(_GAP) >= why_floor:
            shown.append(i)
    shown.sort()
    return Layout(
        tuple(COLUMNS[i] for i in shown),
        tuple(widths[i] for i in shown),
        max(why_floor, width - used()),
        tuple(c.header for i, c in enumerate(COLUMNS) if i not in shown),
    )


def row_cells(row: Row) -> list[str]:
    return [column.cell(row) for column in COLUMNS]


@dataclass(frozen=True)
class Rendered:
    lines: list[str]  # the header, then each row's line(s)
    rows: int  # how many rows made it (all, unless max_lines cut the list)
    hidden: tuple[str, ...]  # columns dropped for width


def render(
    rows: Sequence[Row],
    width: int | None,
    *,
    color: bool = False,
    max_lines: int | None = None,
) -> Rendered:
    """The header and one line per row (more where the why wraps), at most ``max_lines``.

    Only the rows that can be shown are formatted, so a watch of 10,000 sockets on a
    50-line terminal formats about 50 rows. A row is shown whole or not at all.
    """
    with gc_paused():  # a dozen short strings per row, none in a cycle
        return _render(rows, width, color, max_lines)


def _render(rows: Sequence[Row], width: int | None, color: bool, max_lines: int | None) -> Rendered:
    if max_lines is not None:
        rows = rows[: max(0, max_lines - 1)]
    cells = [row_cells(row) for row in rows]
    chosen = layout(cells, width)
    index = [COLUMNS.index(c) for c in chosen.columns]
    # one format string for every line: str.format pads in C (half the time of a
    # per-cell ljust/rjust at 10,000 rows)
    fields = [
        f"{{:{'>' if c.right else '<'}{w}}}"
        for c, w in zip(chosen.columns, chosen.widths, strict=True)
    ]
    line_format = _GAP.join([*fields, "{}"])
    lines = [line_format.format(*(c.header for c in chosen.columns), _WHY_HEADER)]
    indent = " " * sum(w + len(_GAP) for w in chosen.widths)
    shown_rows = 0
    for row, all_cells in zip(rows, cells, strict=True):
        why = _why(row)
        parts = [why]
        if chosen.why_width is not None and len(why) > chosen.why_width:
            parts = _wrap(why, chosen.why_width)
        if max_lines is not None and len(lines) + len(parts) > max_lines:
            break
        line = line_format.format(*[all_cells[i] for i in index], parts[0])
        if color:
            status = row.verdict.status
            text = _TEXT[status]
            line = f"{_COLOR[status]}{text}{_RESET}{line[len(text) :]}"
        lines.append(line)
        lines.extend(indent + part for part in parts[1:])
        shown_rows += 1
    return Rendered(lines, shown_rows, chosen.hidden)


def _wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap at spaces; a word longer than ``width`` starts a line and is cut.

    ``textwrap.wrap`` does the same with regular expressions and took 0.25 s more
    for 10,000 rows at 80 columns (its chunking regex runs on every sentence).
    """
    lines: list[str] = []
    line = ""
    for whole in text.split():
        word = whole
        while len(word) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= width:
            line = f"{line} {word}"
        else:
            lines.append(line)
            line = word
    if line or not lines:
        lines.append(line)
    return lines
