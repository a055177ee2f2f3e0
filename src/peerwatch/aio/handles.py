"""Handles the asyncio Connection gives out: ``Delivery`` for one message, and ``Read``,
its typed read-only attributes (most of them owned by the protocol object)."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

if TYPE_CHECKING:
    from peerwatch.aio.connection import Connection

T = TypeVar("T")


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


class Read(Generic[T]):
    """A typed read-only attribute: ``path`` (dotted) from the connection, most from its
    protocol object, which owns them (core/protocol.py)."""

    def __init__(self, path: str) -> None:
        self.path = path.split(".")

    def __get__(self, conn: Connection, owner: type[Connection] | None = None) -> T:
        value: Any = conn
        for name in self.path:
            value = getattr(value, name)
        return cast(T, value)
