"""psycopg 3 and psycopg_pool: libpq's own options, and a pool check without a round trip.

libpq creates its socket in C, so the options go through libpq itself::

    conn = psycopg.connect(dsn, **connect_options(5))
    pool = psycopg_pool.ConnectionPool(dsn, kwargs=connect_options(5), check=check)

``connect_options`` gives ``keepalives``, ``keepalives_idle/interval/count`` and
``tcp_user_timeout`` (ms) for the budget, as ``guard`` derives them. ``check``
is psycopg_pool's public ``check`` callback: it asks the kernel
(``peerwatch.check``) instead of running ``SELECT 1``; a dead connection is
closed and the callback raises, so the pool replaces it (psycopg_pool then
waits its own back-off, about a second, before the next attempt, as it does
after its built-in ``check_connection`` fails).
"""

from __future__ import annotations

from typing import Any

from peerwatch.integrations.options import derived_knobs

__all__ = ["acheck", "check", "connect_options"]


def connect_options(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3
) -> dict[str, int]:
    """libpq connection options that turn a dead server into an error within ``timeout`` s."""
    knobs = derived_knobs(timeout, idle_limit=idle_limit, probes=probes)
    return {
        "keepalives": 1,
        "keepalives_idle": knobs.keepalive_idle,
        "keepalives_interval": knobs.keepalive_interval,
        "keepalives_count": knobs.keepalive_count,
        "tcp_user_timeout": knobs.user_timeout_ms,
    }


def check(conn: Any) -> None:
    """psycopg_pool ``check=`` callback: if the kernel says dead, close, raise OperationalError.

    No round trip: microseconds, and it cannot hang on the socket it tests.
    """
    import psycopg

    from peerwatch.assessment.checking import check as kernel_check

    if conn.closed:
        raise psycopg.OperationalError("peerwatch.check: the connection is closed")
    verdict = kernel_check(conn.fileno())
    if verdict.dead:
        conn.close()  # so the pool sees it broken and replaces it instead of keeping it
        raise psycopg.OperationalError(f"peerwatch.check: {verdict.reason}")


async def acheck(conn: Any) -> None:
    """``AsyncConnectionPool(check=acheck)``: the same for the asyncio pool."""
    import psycopg

    from peerwatch.assessment.checking import check as kernel_check

    if conn.closed:
        raise psycopg.OperationalError("peerwatch.check: the connection is closed")
    verdict = kernel_check(conn.fileno())
    if verdict.dead:
        await conn.close()
        raise psycopg.OperationalError(f"peerwatch.check: {verdict.reason}")
