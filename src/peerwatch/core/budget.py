"""One server's memory budget: the bytes all its connections hold on behalf of their peers.

Each connection bounds what it holds (``send_buffer``, ``recv_buffer``,
``max_message``), but ten thousand connections each within their own bounds can
still hold more than the host has. The budget adds those holdings up; a
connection reports each change of its own holding (``charge``) and, when the
sum passes the limit, ``on_exceeded`` is asked to end connections (the server
picks the largest holder) until it fits again.

Pure arithmetic: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable


class MemoryBudget:
    """Bytes held for peers by the connections of one server, against ``limit``."""

    __slots__ = ("_on_exceeded", "limit", "used")

    def __init__(self, limit: int, on_exceeded: Callable[[], bool]) -> None:
        self.limit = limit
        self.used = 0
        # ends one connection (refunding its holding); False when there is none left to end
        self._on_exceeded = on_exceeded

    def charge(self, delta: int) -> None:
        """Add ``delta`` bytes (negative: released); enforce the limit on growth."""
        self.used += delta
        if delta > 0:
            while self.used > self.limit and self._on_exceeded():
                pass
