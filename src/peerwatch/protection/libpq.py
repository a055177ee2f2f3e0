"""psycopg 3: libpq makes its sockets in C, so protection goes through libpq's own options.

``psycopg.Connection.connect`` (and ``AsyncConnection.connect``, which
psycopg_pool calls too) is wrapped to add ``keepalives``,
``keepalives_idle/interval/count`` and ``tcp_user_timeout``, derived from the
same budget as ``guard`` (``peerwatch.integrations.psycopg.connect_options``).
Options the program gives itself, in the conninfo string or as keywords, win:
they are the user's explicit choice. Unix-socket and loopback hosts are left
alone unless asked.
"""

from __future__ import annotations

import os

from peerwatch.protection import state
from peerwatch.protection.addresses import LOOPBACK, classify

TYPE_CHECKING = False  # typing costs milliseconds at start-up
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

_originals: dict[type, Any] = {}  # class -> its own connect classmethod
_module_connect: dict[Any, Any] = {}  # the psycopg module -> its original connect


def patch(psycopg: ModuleType) -> None:
    """Wrap ``connect`` of psycopg's Connection and AsyncConnection (idempotent)."""
    conninfo_to_dict = psycopg.conninfo.conninfo_to_dict
    for cls in (psycopg.Connection, psycopg.AsyncConnection):
        if cls in _originals:
            continue
        original = cls.__dict__["connect"]
        _originals[cls] = original
        setattr(cls, "connect", classmethod(_wrap(original.__func__, conninfo_to_dict)))  # noqa: B010
    # psycopg.connect is Connection.connect, bound when psycopg was imported: rebind it
    _module_connect.setdefault(psycopg, psycopg.connect)
    setattr(psycopg, "connect", psycopg.Connection.connect)  # noqa: B010


def _wrap(connect: Any, conninfo_to_dict: Any) -> Any:
    def protected_connect(cls: type, conninfo: str = "", /, **kwargs: Any) -> Any:
        conninfo = kwargs.pop("conninfo", conninfo)
        kwargs.update(options_to_add(conninfo_to_dict(conninfo, **kwargs)))
        return connect(cls, conninfo, **kwargs)

    protected_connect.__doc__ = connect.__doc__
    return protected_connect


def unpatch() -> None:
    for cls, original in _originals.items():
        setattr(cls, "connect", original)  # noqa: B010
    _originals.clear()
    for module, connect in _module_connect.items():
        module.connect = connect
    _module_connect.clear()


def options_to_add(params: dict[str, Any]) -> dict[str, Any]:
    """The libpq options protection adds to these connection parameters ({} to leave it alone)."""
    settings = state.current
    if settings is None:
        return {}
    hosts = _hosts(params)
    from peerwatch.protection.logs import logger

    if not hosts:
        logger().debug("left alone (Unix socket): psycopg connection %s", _target(params))
        return {}
    if not settings.include_loopback and all(classify(h) == LOOPBACK for h in hosts):
        logger().debug("left alone (loopback): psycopg connection %s", _target(params))
        return {}
    from peerwatch.integrations.psycopg import connect_options

    wanted = connect_options(
        settings.timeout, idle_limit=settings.idle_limit, probes=settings.probes
    )
    added = {k: v for k, v in wanted.items() if params.get(k) in (None, "")}
    kept = sorted(set(wanted) - set(added))
    logger().info(
        "protected psycopg connection %s: libpq options %s%s",
        _target(params),
        " ".join(f"{k}={v}" for k, v in added.items()) or "none",
        f" (the program's own kept: {', '.join(kept)})" if kept else "",
    )
    return added


def _hosts(params: dict[str, Any]) -> list[str]:
    """TCP hosts libpq will try (empty: only Unix sockets). hostaddr wins over host."""
    raw = params.get("hostaddr") or params.get("host")
    if raw is None:
        raw = os.environ.get("PGHOSTADDR") or os.environ.get("PGHOST") or ""
    hosts = [h.strip() for h in str(raw).split(",")]
    return [h for h in hosts if h and not h.startswith(("/", "@"))]


def _target(params: dict[str, Any]) -> str:
    host = params.get("hostaddr") or params.get("host") or os.environ.get("PGHOST", "")
    return f"host={host or '(default)'} port={params.get('port') or 5432}"
