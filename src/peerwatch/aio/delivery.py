"""``Delivery``: the handle ``enqueue`` returns for one message."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peerwatch.aio.connection import Connection


class Delivery:
    """Handle for one enqueued message: ``await delivery`` returns once the peer has it."""

    __slots__ = ("_conn", "seq")

    def __init__(self, conn: Connection, seq: int) -> None:
        self._conn = conn
        self.seq = seq

    @property
    def acknowledged(self) -> bool:
        return self._conn.acked_through >= self.seq

    def __await__(self) -> Generator[Any, None, None]:
        return self._conn.wait_acked(self.seq).__await__()

    def __repr__(self) -> str:
        return f"<Delivery seq={self.seq} acknowledged={self.acknowledged}>"
