"""Bounded label cardinality: per (process, peer, port) counts, top K kept, the rest "other".

A host may hold connections to thousands of peers, and a label value per peer
would give Prometheus a series per peer per host. The groups are ranked worst
first (most DEAD, then SUSPECT, then most connections), the first ``top`` keep
their labels and every other group is added into one ``other`` group, so a
scrape has at most ``(top + 1) x 3`` such series whatever the host does, and a
problem is never the one folded away while healthy groups keep their names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from peerwatch.assessment.model import Status

__all__ = ["OTHER", "GroupKey", "PeerGroups"]

OTHER = "other"

#: (process, peer address, service port)
GroupKey = tuple[str, str, str]


@dataclass
class PeerGroups:
    """Connection counts per group and verdict, fed one connection at a time."""

    counts: dict[GroupKey, dict[Status, int]] = field(default_factory=dict)

    def add(self, key: GroupKey, status: Status) -> None:
        by_status = self.counts.get(key)
        if by_status is None:
            by_status = self.counts[key] = dict.fromkeys(Status, 0)
        by_status[status] += 1

    def top(self, limit: int) -> list[tuple[GroupKey, dict[Status, int]]]:
        """The ``limit`` worst groups, then (if any group was left out) the ``other`` group."""
        ranked = sorted(self.counts.items(), key=_rank)
        kept = ranked[:limit]
        rest = ranked[limit:]
        if rest:
            kept.append(((OTHER, OTHER, OTHER), _sum(counts for _, counts in rest)))
        return kept


def _rank(item: tuple[GroupKey, dict[Status, int]]) -> tuple[int, int, int, GroupKey]:
    key, counts = item
    return (-counts[Status.DEAD], -counts[Status.SUSPECT], -sum(counts.values()), key)


def _sum(groups: Iterable[dict[Status, int]]) -> dict[Status, int]:
    total = dict.fromkeys(Status, 0)
    for counts in groups:
        for status, n in counts.items():
            total[status] += n
    return total
