"""requests: a transport adapter built on the urllib3 integration.

::

    session = requests.Session()
    adapter = ProtectedAdapter(5)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
"""

from __future__ import annotations

from typing import Any

import requests.adapters
import urllib3

from peerwatch.integrations.urllib3 import POOL_CLASSES, socket_options

__all__ = ["ProtectedAdapter"]


class ProtectedAdapter(requests.adapters.HTTPAdapter):
    """An ``HTTPAdapter`` whose pooled connections get the budget and the checkout check."""

    def __init__(
        self,
        timeout: float = 10.0,
        *,
        idle_limit: float | None = None,
        probes: int = 3,
        **kwargs: Any,
    ) -> None:
        self._socket_options = socket_options(timeout, idle_limit=idle_limit, probes=probes)
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs.setdefault("socket_options", self._socket_options)
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = POOL_CLASSES
        assert isinstance(self.poolmanager, urllib3.PoolManager)
