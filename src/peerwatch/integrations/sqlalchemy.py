"""SQLAlchemy: ``peerwatch.check`` on every pool checkout, through the public pool events.

::

    engine = sqlalchemy.create_engine(url, connect_args=connect_options(5))  # psycopg's
    install(engine)

On each checkout the ``checkout`` event asks the kernel whether the DBAPI
connection's socket is dead or doomed; if so it raises
``sqlalchemy.exc.DisconnectionError``, and the pool (by SQLAlchemy's documented
contract) discards the connection and checks out another, up to three times,
with no error reaching the application. Unlike ``pool_pre_ping`` there is no
round trip, so it costs microseconds and cannot hang on a dead socket.
Works with any DBAPI whose connections have ``fileno()`` (psycopg 3) or whose
socket is given by ``socket_of``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["install", "socket_of"]


def socket_of(dbapi_connection: Any) -> Any:
    """The socket (or descriptor) under a DBAPI connection: ``fileno()`` where it has one."""
    fileno = getattr(dbapi_connection, "fileno", None)
    if callable(fileno):
        return fileno()
    raise TypeError(
        f"{type(dbapi_connection).__name__} has no fileno(); pass socket_of= to install()"
    )


def install(engine_or_pool: Any, *, socket_of: Callable[[Any], Any] = socket_of) -> None:
    """Check every checkout of ``engine_or_pool`` (an Engine or a Pool) with ``peerwatch.check``."""
    from sqlalchemy import event, exc

    from peerwatch.assessment.checking import check

    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        verdict = check(socket_of(dbapi_connection))
        if verdict.dead:
            raise exc.DisconnectionError(f"peerwatch.check: {verdict.reason}")

    event.listen(engine_or_pool, "checkout", on_checkout)
