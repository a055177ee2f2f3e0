"""psycopg 3 (and psycopg_pool): libpq's own options, and a pool check without a round trip.

libpq creates its socket in C, so the options go through libpq itself::

    conn = psycopg.connect(dsn, **connect_options(5))
    pool = psycopg_pool.ConnectionPool(dsn, kwargs=connect_options(5), check=check)

``connect_options`` gives ``keepalives``, ``keepalives_idle/interval/count`` and
``tcp_user_timeout`` (ms) for the budget, as ``guard`` derives them (the user
timeout shortened by the retransmission lead of a fresh socket). ``check`` is
psycopg_pool's ``check`` callback: it asks the kernel (``peerwatch.check``)
instead of running ``SELECT 1``, and raises so the pool throws the connection
away and hands out another.
"""

from __future__ import annotations

from typing import Any

from peerwatch.guarding import FRESH_SOCKET_LEAD, with_lead
from peerwatch.knobs import knobs_for

__all__ = ["check", "connect_options"]


def connect_options(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3
) -> dict[str, int]:
    """libpq connection options that turn a dead server into an error within ``timeout`` s."""
    knobs = with_lead(
        knobs_for(timeout, probes=probes, idle_limit=idle_limit),
        timeout,
        min(FRESH_SOCKET_LEAD, timeout / 2),
    )
    return {
        "keepalives": 1,
        "keepalives_idle": knobs.keepalive_idle,
        "keepalives_interval": knobs.keepalive_interval,
        "keepalives_count": knobs.keepalive_count,
        "tcp_user_timeout": knobs.user_timeout_ms,
    }


def check(conn: Any) -> None:
    """psycopg_pool ``check=`` callback: raise ``OperationalError`` if the kernel says dead.

    No round trip: microseconds, and it cannot hang on the socket it tests.
    Works for sync and async pools alike (psycopg_pool awaits an async check;
    use ``acheck`` there).
    """
    import psycopg

    from peerwatch.checking import check as kernel_check

    verdict = kernel_check(conn.fileno())
    if verdict.dead:
        raise psycopg.OperationalError(f"peerwatch.check: {verdict.reason}")


async def acheck(conn: Any) -> None:
    """psycopg_pool ``AsyncConnectionPool(check=acheck)``: the same, as a coroutine."""
    check(conn)
