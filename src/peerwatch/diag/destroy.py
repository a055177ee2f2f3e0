"""``peerwatch inspect --destroy``: end the connections judged dead, from outside their process.

A program blocked on a connection to a vanished peer waits for the kernel to
give up, about 15 minutes with Linux defaults. The kernel can end the socket
now: sock_diag ``SOCK_DESTROY`` (what ``ss -K`` sends, needs CAP_NET_ADMIN and
a kernel built with CONFIG_INET_DIAG_DESTROY) aborts it, and the holder's
blocked and next calls fail at once with ECONNABORTED.

Only rows that passed every filter of the snapshot are candidates, and of
those only the DEAD ones unless the caller chose the verdicts itself. Each
socket is named by the sockid its dump returned, cookie included, so a socket
that closed in between and a newer one on the same ports are never touched.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass

from peerwatch.assessment.model import Status
from peerwatch.diag.netlink import destroy_tcp
from peerwatch.diag.view import Row
from peerwatch.errors import RemedyRefused

__all__ = ["DestroyOutcome", "DestroyStopped", "destroy_rows", "destroy_targets"]

#: The socket went away (or was replaced) between the dump and the request: nothing to end.
_GONE = frozenset({errno.ENOENT, errno.ESTALE})


@dataclass(frozen=True)
class DestroyOutcome:
    """What happened to one targeted socket."""

    row: Row
    ended: bool  # the kernel aborted it
    note: str  # "ended", or why not (already gone)

    def as_dict(self) -> dict[str, object]:
        return {**self.row.as_dict(), "destroy": {"ended": self.ended, "note": self.note}}


def destroy_targets(rows: Iterable[Row], *, verdicts_chosen: bool) -> list[Row]:
    """The rows ``--destroy`` acts on: every selected row if the verdicts were chosen
    explicitly (``--verdict``, ``--problems``), else only the DEAD ones.

    Sockets without a sockid (not from a dump) are never targets.
    """
    return [
        row
        for row in rows
        if row.record.sockid and (verdicts_chosen or row.verdict.status is Status.DEAD)
    ]


class DestroyStopped(RemedyRefused):
    """The kernel refused one socket; ``outcomes`` are those handled before it."""

    def __init__(self, reason: str, outcomes: list[DestroyOutcome]) -> None:
        super().__init__(reason)
        self.outcomes = outcomes


def destroy_rows(rows: Iterable[Row]) -> list[DestroyOutcome]:
    """Abort each row's socket. Raises ``DestroyStopped`` at the first refusal of the kernel.

    A refusal for lack of privilege or kernel support applies to every socket
    alike, so it comes at the first one, before anything was changed; any other
    refusal stops there too, and the exception carries what was already ended.
    """
    outcomes: list[DestroyOutcome] = []
    for row in rows:
        try:
            destroy_tcp(row.record.family, row.record.sockid)
        except OSError as exc:
            if exc.errno in _GONE:
                outcomes.append(DestroyOutcome(row, False, "already gone"))
                continue
            raise DestroyStopped(_refusal(exc), outcomes) from exc
        outcomes.append(DestroyOutcome(row, True, "ended"))
    return outcomes


def _refusal(exc: OSError) -> str:
    if exc.errno in (errno.EPERM, errno.EACCES):
        return (
            "the kernel refused SOCK_DESTROY: it needs CAP_NET_ADMIN "
            "(run as root, or grant the capability)"
        )
    if exc.errno == errno.EOPNOTSUPP:
        return (
            "this kernel cannot end sockets from outside (built without CONFIG_INET_DIAG_DESTROY)"
        )
    return f"SOCK_DESTROY failed: {exc.strerror or exc}"
