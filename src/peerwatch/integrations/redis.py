"""redis-py, sync and asyncio: the driver's own keepalive options, and a pool check.

redis-py sets ``socket_keepalive_options`` with ``setsockopt(IPPROTO_TCP, ...)``
on every socket it makes, so ``TCP_USER_TIMEOUT`` goes through that public
option too::

    r = redis.Redis(host=..., **connection_options(5))
    pool = redis.ConnectionPool(host=..., connection_class=CheckedConnection,
                                **connection_options(5))

``CheckedConnection`` (and ``AsyncCheckedConnection`` for ``redis.asyncio``)
asks ``peerwatch.check`` on every checkout: redis-py's pool calls
``connect()`` each time it hands a connection out, and a dead connection is
dropped there and replaced by a fresh one. redis-py's own checkout test
(``can_read``) already notices a server that closed the connection; the
kernel check adds what a read cannot see: data or keepalive probes
unanswered, a zero window. Where redis-py has no public hook: the socket is
reached through ``Connection._get_socket()`` / the asyncio writer's transport.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio

from peerwatch.assessment.checking import check
from peerwatch.integrations.options import tcp_options_by_number

__all__ = ["AsyncCheckedConnection", "CheckedConnection", "connection_options"]


def connection_options(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3
) -> dict[str, Any]:
    """``socket_keepalive`` and ``socket_keepalive_options`` for redis-py, from the budget."""
    return {
        "socket_keepalive": True,
        "socket_keepalive_options": tcp_options_by_number(
            timeout, idle_limit=idle_limit, probes=probes
        ),
    }


class CheckedConnection(redis.Connection):
    """A redis-py connection the pool replaces at checkout when the kernel says it is dead."""

    def connect(self) -> None:
        sock = self._get_socket()
        if sock is not None and check(sock).dead:
            self.disconnect()  # type: ignore[no-untyped-call]
        super().connect()  # type: ignore[no-untyped-call]


class AsyncCheckedConnection(redis.asyncio.Connection):
    """The same for ``redis.asyncio``."""

    async def connect(self) -> None:
        writer = getattr(self, "_writer", None)
        sock = None if writer is None else writer.get_extra_info("socket")
        if sock is not None and check(sock).dead:
            await self.disconnect()
        await super().connect()  # type: ignore[no-untyped-call]
