"""``peerwatch.serve``: a plain server, or a resumable one when a resume window or store is named.

Kept apart from ``aio/server.py`` (the plain server) and ``aio/resumable_server.py``
(which builds on it), so that neither imports the other back.
"""

from __future__ import annotations

import socket
import ssl as ssl_module
from collections.abc import Callable
from typing import TYPE_CHECKING, cast, overload

from peerwatch.aio.connection import Connection
from peerwatch.aio.handles import Opening
from peerwatch.aio.resumable_server import (
    ResumableServer,
    SessionHandler,
    start_resumable_server,
)
from peerwatch.aio.server import Handler, Server, _shut_down, start_server
from peerwatch.core.config import DEFAULT_HOST, Config, Settings
from peerwatch.core.session import DEFAULT_LIMITS, SessionLimits
from peerwatch.sessions.store import SessionStore

if TYPE_CHECKING:
    from typing_extensions import Unpack


@overload
def serve(
    handler: Handler,
    host: str | None = DEFAULT_HOST,
    port: int = 0,
    *,
    config: Config | None = None,
    reuse_port: bool = False,
    ssl: ssl_module.SSLContext | None = None,
    sock: socket.socket | None = None,
    backlog: int = 1024,
    max_connections: int | None = None,
    on_connection: Callable[[Connection], None] | None = None,
    on_accept: Callable[[Connection], None] | None = None,
    incarnation: int | None = None,
    resume_window: None = None,
    session_store: None = None,
    max_replay_bytes: int = DEFAULT_LIMITS.max_replay_bytes,
    max_replay_age: float = DEFAULT_LIMITS.max_replay_age,
    **settings: Unpack[Settings],
) -> Opening[Server]: ...


@overload
def serve(
    handler: SessionHandler,
    host: str | None = DEFAULT_HOST,
    port: int = 0,
    *,
    config: Config | None = None,
    reuse_port: bool = False,
    ssl: ssl_module.SSLContext | None = None,
    sock: socket.socket | None = None,
    backlog: int = 1024,
    max_connections: int | None = None,
    on_connection: Callable[[Connection], None] | None = None,
    on_accept: Callable[[Connection], None] | None = None,
    incarnation: int | None = None,
    resume_window: float | None = None,
    session_store: SessionStore | None = None,
    max_replay_bytes: int = DEFAULT_LIMITS.max_replay_bytes,
    max_replay_age: float = DEFAULT_LIMITS.max_replay_age,
    **settings: Unpack[Settings],
) -> Opening[ResumableServer]: ...


def serve(
    handler: Handler | SessionHandler,
    host: str | None = DEFAULT_HOST,
    port: int = 0,
    *,
    config: Config | None = None,
    reuse_port: bool = False,
    ssl: ssl_module.SSLContext | None = None,
    sock: socket.socket | None = None,
    backlog: int = 1024,
    max_connections: int | None = None,
    on_connection: Callable[[Connection], None] | None = None,
    on_accept: Callable[[Connection], None] | None = None,
    incarnation: int | None = None,
    resume_window: float | None = None,
    session_store: SessionStore | None = None,
    max_replay_bytes: int = DEFAULT_LIMITS.max_replay_bytes,
    max_replay_age: float = DEFAULT_LIMITS.max_replay_age,
    **settings: Unpack[Settings],
) -> Opening[Server] | Opening[ResumableServer]:
    """Listen on ``host:port`` and run ``await handler(conn)`` for every peer after its HELLO:
    ``server = await serve(...)``, or ``async with serve(...) as server:`` to have it shut
    down (GOODBYE to every peer) on the way out.

    A plain function (``def handler(conn)``, returning None) is the callback style: it sets
    ``conn.set_message_callback`` and ``conn.add_verdict_callback`` and returns, and the
    connection runs without a task until its verdict, ``conn.close()`` or the shutdown
    (about 1.5 KiB less per idle connection; a plain server only).

    ``host`` defaults to ``127.0.0.1``: only this machine can connect. Serving
    the network is a choice made explicit: ``"0.0.0.0"`` (IPv4), ``"::"``
    (IPv6) or ``None`` (every interface, as with asyncio).

    SO_REUSEADDR is always set; ``reuse_port=True`` adds SO_REUSEPORT for
    multi-process servers. The kernel backup knobs are set on the listening
    socket, which accepted sockets inherit. When the handler returns, the
    connection is closed with GOODBYE. ``max_connections`` counts connections
    past their HELLO; the limits that protect the server from its peers are in
    ``Config`` (``max_handshakes``, ``memory_budget``, ...; see docs/SECURITY.md).
    Keyword settings are ``Config`` fields, typed (``Settings``), checked at once.

    ``resume_window`` (or a ``session_store``) makes it a resumable server
    (``aio.resumable_server``): the handler gets a ``ResumableConnection`` once per
    session, and a detached session is kept ``resume_window`` seconds (default 30)
    in ``session_store`` (None: this process's memory). README, "Resumable sessions".
    """
    cfg = Config.from_overrides(config, settings)
    if resume_window is None and session_store is None:
        plain = start_server(
            cast(Handler, handler),
            host,
            port,
            cfg,
            reuse_port=reuse_port,
            ssl=ssl,
            sock=sock,
            backlog=backlog,
            max_connections=max_connections,
            on_connection=on_connection,
            on_accept=on_accept,
            incarnation=incarnation,
        )
        return Opening(plain, _shut_down)
    limits = SessionLimits(max_replay_bytes, max_replay_age, resume_window or DEFAULT_LIMITS.window)
    resumable = start_resumable_server(
        cast(SessionHandler, handler),
        host,
        port,
        cfg,
        limits=limits,
        store=session_store,
        reuse_port=reuse_port,
        ssl=ssl,
        sock=sock,
        backlog=backlog,
        max_connections=max_connections,
        on_connection=on_connection,
        on_accept=on_accept,
        incarnation=incarnation,
    )
    return Opening(resumable, _shut_down)
