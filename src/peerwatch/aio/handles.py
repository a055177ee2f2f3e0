"""Handles the asyncio API gives out: ``Opening`` (what ``connect`` and ``serve`` return),
``Delivery`` for one message, and ``Read``, a Connection's typed read-only attributes
(most of them owned by the protocol object)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from peerwatch.aio.connection import Connection

T = TypeVar("T")


class AckSource(Protocol):
    """What a Delivery asks of its connection (a plain or a resumable one)."""

    @property
    def acked_through(self) -> int: ...

    async def wait_acked(self, seq: int) -> None: ...


class Delivery:
    """Handle for one enqueued message: ``await delivery`` returns once the peer has it."""

    __slots__ = ("_conn", "seq")

    def __init__(self, conn: AckSource, seq: int) -> None:
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


class Opening(Generic[T]):
    """What ``connect`` and ``serve`` return: ``await`` it for the connection or server, or
    ``async with`` it to have that closed on the way out, as with websockets.

    ``async with peerwatch.connect(...) as conn:`` closes the connection with GOODBYE
    (unless it already has its verdict); ``async with peerwatch.serve(...) as server:``
    shuts the server down. Awaited, the caller closes what it got.
    """

    __slots__ = ("_close", "_coro", "_opened")

    def __init__(
        self, coro: Coroutine[Any, Any, T], close: Callable[[T], Awaitable[object]]
    ) -> None:
        self._coro = coro
        self._close = close
        self._opened: T | None = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._coro.__await__()

    async def __aenter__(self) -> T:
        self._opened = opened = await self._coro
        return opened

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._opened is not None:
            await self._close(self._opened)
