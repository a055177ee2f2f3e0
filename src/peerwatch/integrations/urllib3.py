"""urllib3 (and requests through it): the public ``socket_options``, and a pool check.

::

    http = pool_manager(5)                        # a urllib3.PoolManager
    session.mount("https://", ProtectedAdapter(5))  # requests; see ``requests.py``

``socket_options`` keeps urllib3's defaults (TCP_NODELAY) and adds keepalive
and ``TCP_USER_TIMEOUT`` from the budget. The pools' connection classes
(public ``ConnectionCls``) add ``peerwatch.check`` to urllib3's own checkout
test (``is_connection_dropped``, a zero-timeout poll, which sees a FIN but
not data or probes left unanswered), so a doomed keep-alive connection is
replaced before a request is written to it.
"""

from __future__ import annotations

from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from peerwatch.assessment.checking import check
from peerwatch.integrations import options

__all__ = ["POOL_CLASSES", "pool_manager", "socket_options"]


def socket_options(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3
) -> list[tuple[int, int, int]]:
    """urllib3's default socket options plus keepalive and user timeout for ``timeout``."""
    ours = options.socket_options(timeout, idle_limit=idle_limit, probes=probes)
    return [*HTTPConnection.default_socket_options, *ours]


class CheckedHTTPConnection(HTTPConnection):
    @property
    def is_connected(self) -> bool:
        return bool(super().is_connected) and not check(self.sock).dead


class CheckedHTTPSConnection(HTTPSConnection):
    @property
    def is_connected(self) -> bool:
        return bool(super().is_connected) and not check(self.sock).dead


class CheckedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = CheckedHTTPConnection


class CheckedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = CheckedHTTPSConnection


#: ``PoolManager.pool_classes_by_scheme`` with the checked pools.
POOL_CLASSES: dict[str, type[HTTPConnectionPool]] = {
    "http": CheckedHTTPConnectionPool,
    "https": CheckedHTTPSConnectionPool,
}


def pool_manager(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3, **kwargs: Any
) -> urllib3.PoolManager:
    """A ``urllib3.PoolManager`` whose connections are protected and checked at checkout."""
    kwargs.setdefault(
        "socket_options", socket_options(timeout, idle_limit=idle_limit, probes=probes)
    )
    manager = urllib3.PoolManager(**kwargs)
    manager.pool_classes_by_scheme = POOL_CLASSES
    return manager
