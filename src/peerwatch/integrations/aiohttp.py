"""aiohttp: the public ``socket_factory`` of ``TCPConnector`` (aiohttp >= 3.12).

::

    session = aiohttp.ClientSession(connector=connector(5))

The factory makes each socket with keepalive and ``TCP_USER_TIMEOUT`` set
before connecting. aiohttp's connector drops a pooled connection whose
transport was closed; it has no public checkout hook, so ``peerwatch.check``
is not wired in here.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import aiohttp

from peerwatch.integrations.options import apply_socket_options, socket_options

__all__ = ["connector", "socket_factory"]


def socket_factory(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3
) -> Callable[[Any], socket.socket]:
    """A ``socket_factory`` for ``aiohttp.TCPConnector``: sockets protected before connecting."""
    opts = socket_options(timeout, idle_limit=idle_limit, probes=probes)

    def make(addr_info: Any) -> socket.socket:
        family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
        sock = socket.socket(family, kind, proto)
        try:
            apply_socket_options(sock, opts)
        except OSError:
            sock.close()
            raise
        return sock

    return make


def connector(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3, **kwargs: Any
) -> aiohttp.TCPConnector:
    """``aiohttp.TCPConnector`` whose connections turn a dead server into an error in time."""
    kwargs.setdefault(
        "socket_factory", socket_factory(timeout, idle_limit=idle_limit, probes=probes)
    )
    return aiohttp.TCPConnector(**kwargs)
