"""``inspect --idle-limit``: each selected connection's budget findings, with the owner's options.

sock_diag does not report keepalive timers or TCP_USER_TIMEOUT, only a pending
keepalive timer. Where this process may borrow the owner's descriptors
(``peerwatch.kernel.pidfd``: root, or the same user without Yama restrictions)
the options are read exactly from the socket (``assessment.live.socket_facts``,
getsockopt only: nothing is changed); elsewhere the rules work from the timer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from peerwatch.assessment.budget import BudgetFinding, audit_budget, guard_fix
from peerwatch.assessment.live import socket_facts
from peerwatch.assessment.model import SocketFacts
from peerwatch.diag.view import Row
from peerwatch.errors import PeerwatchError
from peerwatch.kernel.pidfd import open_process
from peerwatch.kernel.tcpinfo import TcpState

__all__ = ["AuditedRow", "audit_rows"]


@dataclass(frozen=True)
class AuditedRow:
    row: Row
    settings: str  # "socket options" (read exactly) or "sock_diag timer" (inferred)
    findings: tuple[BudgetFinding, ...]
    #: The protection options read from the socket, when they could be: what a program,
    #: its driver, ``guard`` or ``peerwatch run`` really applied to this connection.
    options: SocketFacts | None = None

    def applied(self) -> dict[str, object] | None:
        known = self.options
        if known is None:
            return None
        return {
            "keepalive": known.keepalive,
            "idle": known.keepalive_idle,
            "interval": known.keepalive_interval,
            "count": known.keepalive_count,
            "user_timeout_ms": known.user_timeout_ms,
        }

    def applied_text(self) -> str:
        """``keepalive 2+1x3 s, user timeout 4600 ms``, or how the settings were inferred."""
        known = self.options
        if known is None:
            return self.settings
        keepalive = (
            f"keepalive {known.keepalive_idle}+{known.keepalive_interval}x{known.keepalive_count} s"
            if known.keepalive
            else "keepalive off"
        )
        return f"{self.settings}: {keepalive}, user timeout {known.user_timeout_ms} ms"

    def as_dict(self, idle_limit: float) -> dict[str, object]:
        return {
            **self.row.as_dict(),
            "budget": {
                "idle_limit": idle_limit,
                "settings": self.settings,
                "applied": self.applied(),
                "findings": [f.as_dict() for f in self.findings],
            },
        }


def audit_rows(rows: Iterable[Row], idle_limit: float) -> list[AuditedRow]:
    """Every ESTABLISHED row with its findings (an empty tuple: safe behind that limit)."""
    established = [row for row in rows if row.record.state is TcpState.ESTABLISHED]
    options = _socket_options(established)
    audited = []
    for row in established:
        facts = row.record.facts()
        known = options.get(row.record.inode)
        if known is not None:
            facts = dataclasses.replace(
                facts,
                keepalive=known.keepalive,
                keepalive_idle=known.keepalive_idle,
                keepalive_interval=known.keepalive_interval,
                keepalive_count=known.keepalive_count,
                user_timeout_ms=known.user_timeout_ms,
            )
        pid = row.owners[0].pid if row.owners else None
        fix = guard_fix(idle_limit, pid, row.record.local[1])
        audited.append(
            AuditedRow(
                row,
                "socket options" if known is not None else "sock_diag timer",
                tuple(audit_budget(facts, idle_limit, fix)),
                known,
            )
        )
    return audited


def _socket_options(rows: list[Row]) -> dict[int, SocketFacts]:
    """inode -> facts read from the socket itself, for every owner we may borrow from."""
    wanted: dict[int, set[int]] = {}
    for row in rows:
        for owner in row.owners[:1]:
            wanted.setdefault(owner.pid, set()).add(row.record.inode)
    found: dict[int, SocketFacts] = {}
    for pid, inodes in wanted.items():
        try:
            with open_process(pid) as process:
                for fd, inode in process.socket_fds():
                    if inode not in inodes or inode in found:
                        continue
                    with process.borrow(fd) as dup:
                        if dup is not None:
                            found[inode] = socket_facts(dup)
        except PeerwatchError:  # refused or gone (RemedyRefused), or not TCP (ConfigError)
            continue
    return found
