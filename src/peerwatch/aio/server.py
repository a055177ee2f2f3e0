"""``peerwatch.serve``: accept peerwatch connections and run a handler for each."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from peerwatch.aio.client import make_config
from peerwatch.aio.connection import Connection
from peerwatch.aio.sockets import listening_socket, tune
from peerwatch.core.config import Config
from peerwatch.core.frames import GoodbyeCode
from peerwatch.errors import PeerwatchError

log = logging.getLogger("peerwatch")

Handler = Callable[[Connection], Awaitable[None]]


class Server:
    """A running peerwatch server. ``async with`` closes it (GOODBYE to every peer)."""

    def __init__(
        self,
        handler: Handler,
        config: Config,
        *,
        max_connections: int | None = None,
        on_connection: Callable[[Connection], None] | None = None,
        on_accept: Callable[[Connection], None] | None = None,
        incarnation: int | None = None,
    ) -> None:
        self._handler = handler
        self.config = config
        self.max_connections = max_connections
        self.on_connection = on_connection
        self.on_accept = on_accept
        self.incarnation = incarnation
        self.connections: set[Connection] = set()
        self.refused = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    def _make_protocol(self) -> Connection:
        conn = Connection(self.config, "server", incarnation=self.incarnation)
        if self.on_accept is not None:
            # every accepted connection, refused or not, before its HELLO: a verdict
            # callback added here also sees handshake timeouts and early protocol errors
            self.on_accept(conn)
        if self.max_connections is not None and len(self.connections) >= self.max_connections:
            self.refused += 1
            conn._ready.add_done_callback(lambda _: _refuse(conn))
            return conn
        self.connections.add(conn)
        conn.add_verdict_callback(lambda c, _: self.connections.discard(c))
        conn._ready.add_done_callback(lambda fut: self._start(conn, fut))
        return conn

    def _start(self, conn: Connection, ready: asyncio.Future[None]) -> None:
        if ready.cancelled() or ready.exception() is not None:
            return
        if self.on_connection is not None:
            self.on_connection(conn)
        task = asyncio.get_running_loop().create_task(self._run(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, conn: Connection) -> None:
        try:
            await self._handler(conn)
        except PeerwatchError:
            pass  # the verdict says it all
        except Exception:
            log.exception("handler failed for %s", conn.peer)
        finally:
            if conn.verdict is None:
                await conn.close("handler finished")

    async def shutdown(self, reason: str = "server shutting down", drain: float = 1.0) -> None:
        """Stop accepting, say GOODBYE(GOING_AWAY) to every peer, wait at most ``drain`` s."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.leave(GoodbyeCode.GOING_AWAY, reason, f"server shutdown: {reason}")
        waits = [asyncio.ensure_future(c.wait_closed()) for c in list(self.connections)]
        if waits:
            await asyncio.wait(waits, timeout=drain)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=drain)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()
        await self.wait_closed()


def _refuse(conn: Connection) -> None:
    conn.leave(GoodbyeCode.OVERLOADED, "too many connections", "refused: max_connections reached")


async def serve(
    handler: Handler,
    host: str | None = None,
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
    **overrides: Any,
) -> Server:
    """Listen on ``host:port`` and run ``await handler(conn)`` for every peer after its HELLO.

    SO_REUSEADDR is always set; ``reuse_port=True`` adds SO_REUSEPORT for
    multi-process servers. The kernel backup knobs are set on the listening
    socket, which accepted sockets inherit. When the handler returns, the
    connection is closed with GOODBYE.
    """
    cfg = make_config(config, overrides)
    if sock is None:
        sock = listening_socket(host, port, cfg, reuse_port=reuse_port, backlog=backlog)
    else:
        tune(sock, cfg)
    server = Server(
        handler,
        cfg,
        max_connections=max_connections,
        on_connection=on_connection,
        on_accept=on_accept,
        incarnation=incarnation,
    )
    loop = asyncio.get_running_loop()
    kwargs: dict[str, Any] = {}
    if ssl is not None:
        kwargs["ssl_handshake_timeout"] = cfg.handshake_timeout
    server._server = await loop.create_server(
        server._make_protocol, sock=sock, ssl=ssl, backlog=backlog, **kwargs
    )
    return server
