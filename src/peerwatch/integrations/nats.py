"""nats.py: no socket option at all, so ``guard`` the socket, again after each reconnect.

::

    nc = await connect(["nats://host:4222"], 5)   # instead of nats.connect(...)

nats.py's public API reaches neither its socket nor a socket factory; the
socket is taken from the client's transport (``Client._transport``, private)
right after connecting, and again from the public ``reconnected_cb``, since a
reconnect makes a new socket. ``peerwatch run`` / ``peerwatch.protect()``
cover nats.py without private access: it connects through asyncio.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from peerwatch.kernel.guarding import GuardResult, guard

__all__ = ["connect", "guard_client"]


def guard_client(
    nc: Any, timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3
) -> GuardResult:
    """``guard`` the socket of a connected ``nats.aio.client.Client``."""
    writer = nc._transport._io_writer
    return guard(writer.get_extra_info("socket"), timeout, probes=probes, idle_limit=idle_limit)


async def connect(
    servers: Any,
    timeout: float = 10.0,
    *,
    idle_limit: float | None = None,
    probes: int = 3,
    **kwargs: Any,
) -> Any:
    """``nats.connect`` with every connection (the first and each reconnect) guarded."""
    import nats

    user_reconnected: Callable[[], Awaitable[None]] | None = kwargs.pop("reconnected_cb", None)
    client: Any = None

    async def reconnected() -> None:
        if client is not None:
            guard_client(client, timeout, idle_limit=idle_limit, probes=probes)
        if user_reconnected is not None:
            await user_reconnected()

    client = await nats.connect(servers, reconnected_cb=reconnected, **kwargs)
    guard_client(client, timeout, idle_limit=idle_limit, probes=probes)
    return client
