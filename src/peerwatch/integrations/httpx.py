"""httpx: the public ``socket_options`` of its transports.

::

    client = httpx.Client(transport=transport(5))
    client = httpx.AsyncClient(transport=async_transport(5))

httpcore's pool already drops a keep-alive connection that became readable
(a FIN) before reuse; it has no public hook for a checkout check, so
``peerwatch.check`` is not wired in here.
"""

from __future__ import annotations

from typing import Any

import httpx

from peerwatch.integrations.options import socket_options

__all__ = ["async_transport", "transport"]


def transport(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3, **kwargs: Any
) -> httpx.HTTPTransport:
    """``httpx.HTTPTransport`` whose sockets turn a dead server into an error within ``timeout``."""
    kwargs.setdefault(
        "socket_options", socket_options(timeout, idle_limit=idle_limit, probes=probes)
    )
    return httpx.HTTPTransport(**kwargs)


def async_transport(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3, **kwargs: Any
) -> httpx.AsyncHTTPTransport:
    """The same for ``httpx.AsyncClient``."""
    kwargs.setdefault(
        "socket_options", socket_options(timeout, idle_limit=idle_limit, probes=probes)
    )
    return httpx.AsyncHTTPTransport(**kwargs)
