"""Blocking server: each connection's handler runs in a worker thread of its own."""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from peerwatch.aio.connection import Connection as AioConnection
from peerwatch.aio.server import Server as AioServer
from peerwatch.aio.server import start_server
from peerwatch.core.config import DEFAULT_HOST, Config, Settings
from peerwatch.sync.connection import Connection
from peerwatch.sync.loop import DEFAULT_TIMEOUT, LoopThread, shared_loop

if TYPE_CHECKING:
    from typing_extensions import Unpack

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


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def serve(
    handler: SyncHandler,
    host: str | None = DEFAULT_HOST,
    port: int = 0,
    *,
    config: Config | None = None,
    reuse_port: bool = False,
    ssl: ssl_module.SSLContext | None = None,
    max_connections: int | None = None,
    **settings: Unpack[Settings],
) -> Server:
    """Listen and call ``handler(conn)`` in a thread for each peer; returns once listening.

    Keyword overrides are ``Config`` fields with the same meaning as for
    ``peerwatch.serve`` (``interval=0.5, timeout=2.0``: a peer silent for 2 s
    is dead). When the handler returns, the connection is closed with GOODBYE,
    as with ``peerwatch.serve``. Heartbeats of all connections run on the shared loop.
    """
    cfg = Config.from_overrides(config, settings)
    runner = shared_loop()

    async def bridge(conn: AioConnection) -> None:
        # a thread of its own per connection: a handler blocks for the connection's life,
        # so a bounded pool would leave the connections past its size unserved
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def run_handler() -> None:
            error: BaseException | None = None
            try:
                handler(Connection(runner, conn))
            except BaseException as exc:
                error = exc
            loop.call_soon_threadsafe(_settle, done, error)

        threading.Thread(target=run_handler, name=f"peerwatch-{conn.peer}", daemon=True).start()
        await done

    server = runner.run(
        start_server(
            bridge,
            host,
            port,
            cfg,
            reuse_port=reuse_port,
            ssl=ssl,
            max_connections=max_connections,
        ),
        DEFAULT_TIMEOUT,  # binding a socket: bounded only so that no call can block forever
    )
    return Server(runner, server)
