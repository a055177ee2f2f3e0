"""asyncpg: no keepalive or user-timeout option (MagicStack/asyncpg#606), so ``guard`` the socket.

::

    conn = await asyncpg.connect(dsn)
    guard_connection(conn, 5)
    pool = await asyncpg.create_pool(dsn, init=pool_init(5))

asyncpg has no public way to reach its socket: ``guard_connection`` takes it
from the connection's asyncio transport (``Connection._transport``, a private
attribute). ``peerwatch run`` / ``peerwatch.protect()`` need no private access
at all: asyncpg connects through asyncio, which the zero-code hooks cover. The
pool's ``init`` is public and runs once per new connection. asyncpg's pool has
no hook that can replace a connection at acquire (``setup`` can only fail the
acquire), so ``peerwatch.check`` is not wired in here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from peerwatch.kernel.guarding import GuardResult, guard

__all__ = ["guard_connection", "pool_init"]


def guard_connection(
    conn: Any, timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3
) -> GuardResult:
    """``guard`` the socket under an asyncpg connection (or a pool's connection proxy)."""
    inner = getattr(conn, "_con", None) or conn  # a PoolConnectionProxy wraps the connection
    sock = inner._transport.get_extra_info("socket")
    return guard(sock, timeout, probes=probes, idle_limit=idle_limit)


def pool_init(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3
) -> Callable[[Any], Awaitable[None]]:
    """An ``init`` for ``asyncpg.create_pool`` that guards every connection the pool opens."""

    async def init(conn: Any) -> None:
        guard_connection(conn, timeout, idle_limit=idle_limit, probes=probes)

    return init
