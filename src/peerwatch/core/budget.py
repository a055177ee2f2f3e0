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


class Share:
    """One connection's part of a ``MemoryBudget`` (or of none: a client's connection).

    ``grow`` and ``shrink`` charge an exact change (a message enqueued, a message
    taken); ``settle`` recounts after a read, which may change every part of what
    the connection holds; ``refund`` gives it all back once the verdict is in, and
    the share charges nothing after that.
    """

    __slots__ = ("budget", "charged")

    def __init__(self, budget: MemoryBudget | None) -> None:
        self.budget = budget
        self.charged = 0

    def grow(self, size: int) -> None:
        if self.budget is not None:
            self.charged += size
            self.budget.charge(size)  # may end connections, this one included (refunded)

    def shrink(self, size: int) -> None:
        if self.budget is not None:
            self.charged -= size
            self.budget.used -= size

    def settle(self, held: int) -> None:
        delta = held - self.charged
        if delta and self.budget is not None:
            self.charged = held
            self.budget.charge(delta)

    def refund(self) -> None:
        budget = self.budget
        if budget is not None:
            self.budget = None
            budget.charge(-self.charged)
            self.charged = 0
