"""Blocking server: each connection's handler runs in a worker thread of its own."""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from peerwatch.aio.connection import Connection as AioConnection
from peerwatch.aio.server import Server as AioServer
from peerwatch.aio.server import serve as aio_serve
from peerwatch.sync.connection import Connection
from peerwatch.sync.loop import DEFAULT_TIMEOUT, LoopThread, shared_loop

SyncHandler = Callable[[Connection], None]


class Server:
    """A running blocking server; ``with`` or ``close()`` stops it with GOODBYE to peers."""

    def __init__(self, runner: LoopThread, server: AioServer) -> None:
        self._runner = runner
        self.aio = server
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        return self.aio.port

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return self.aio.sockets

    def close(self, reason: str = "server shutting down", drain: float = 1.0) -> None:
        if not self._stopped.is_set():
            self._runner.run(self.aio.shutdown(reason, drain), 2 * drain + 5.0)
            self._stopped.set()

    def serve_forever(self, poll: float = 0.5) -> None:
        """Block until ``close()`` is called from another thread (or Ctrl-C)."""
        while not self._stopped.wait(poll):
            pass

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve(
    handler: SyncHandler,
    host: str | None = None,
    port: int = 0,
    *,
    reuse_port: bool = False,
    ssl: ssl_module.SSLContext | None = None,
    max_connections: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    **overrides: Any,
) -> Server:
    """Listen and call ``handler(conn)`` in a thread for each peer; returns once listening.

    When the handler returns, the connection is closed with GOODBYE, as with
    ``peerwatch.serve``. Heartbeats of all connections run on the shared loop.
    """
    runner = shared_loop()

    async def bridge(conn: AioConnection) -> None:
        await asyncio.get_running_loop().run_in_executor(None, handler, Connection(runner, conn))

    server = runner.run(
        aio_serve(
            bridge,
            host,
            port,
            reuse_port=reuse_port,
            ssl=ssl,
            max_connections=max_connections,
            **overrides,
        ),
        timeout,
    )
    return Server(runner, server)
