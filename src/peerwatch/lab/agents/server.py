"""The server side of every strategy, in one process on kodos (the article's ``nc -l``).

One process, because the faults act on "the server process": SIGINT (graceful
close), SIGKILL (crash) and SIGSTOP (hung) must hit every strategy's server at
once. Each strategy listens on its own port so a socket's port says whose it is.

Read modes:
* ``echo``: read everything, send it back (a request gets its reply);
* ``slow``: echo the greeting, then read ``slow_read_bytes`` (or one message),
  sleep ``slow_read_pause``, and send nothing back: a consumer that is alive
  but slower than its producer, so its receive window closes.

Commands: ``close-all`` makes the application close every connection while the
process lives on (the half-open scenario: the kernel sends FIN and the socket
waits in FIN_WAIT_2). SIGINT closes every connection politely (FIN, websocket
close frame, peerwatch GOODBYE) and exits, like a server stopped with Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from peerwatch.lab.agents.kit import Emit, read_commands, watch_stalls

Closer = Callable[[], Awaitable[None]]


class LabServer:
    def __init__(self, spec: dict[str, Any], emit: Emit, loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.emit = emit
        self.loop = loop
        self.slow = spec["read_mode"] == "slow"
        self.closers: dict[int, tuple[str, Closer]] = {}  # id -> (strategy, polite close)
        self.listeners: list[Callable[[], None]] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.done = asyncio.Event()

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------------ raw

    async def start_raw(self, strategy: str, port: int) -> None:
        listener = socket.create_server((self.spec["host"], port), reuse_port=False, backlog=16)
        listener.setblocking(False)
        self.listeners.append(listener.close)

        async def accept_loop() -> None:
            while True:
                conn, _ = await self.loop.sock_accept(listener)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.emit("accepted", strategy=strategy)
                self.spawn(self.serve_raw(strategy, conn))

        self.spawn(accept_loop())

    async def serve_raw(self, strategy: str, conn: socket.socket) -> None:
        key = id(conn)
        task = asyncio.current_task()

        async def close() -> None:
            # Cancel the reader; its finally closes the socket and the kernel sends
            # FIN (nothing is left unread in echo mode: we read eagerly).
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        self.closers[key] = (strategy, close)
        size = self.spec["slow_read_bytes"] if self.slow else 65536
        greeted = False
        try:
            while True:
                data = await self.loop.sock_recv(conn, size)
                if not data:
                    break
                if self.slow and greeted:
                    await asyncio.sleep(self.spec["slow_read_pause"])
                else:
                    await self.loop.sock_sendall(conn, data)
                    greeted = True
        except OSError as exc:
            self.emit("server-conn-error", strategy=strategy, error=str(exc))
        finally:
            self.closers.pop(key, None)
            conn.close()

    # ------------------------------------------------------------ websockets

    async def start_websockets(self, strategy: str, port: int) -> None:
        from websockets.asyncio.server import ServerConnection, serve

        async def handler(ws: ServerConnection) -> None:
            key = id(ws)

            async def close() -> None:
                await ws.close(1001, "server closing")

            self.closers[key] = (strategy, close)
            self.emit("accepted", strategy=strategy)
            try:
                greeted = False
                async for message in ws:
                    if self.slow and greeted:
                        await asyncio.sleep(self.spec["slow_read_pause"])
                    else:
                        await ws.send(message)
                        greeted = True
            except Exception as exc:
                self.emit("server-conn-error", strategy=strategy, error=repr(exc))
            finally:
                self.closers.pop(key, None)

        server = await serve(
            handler,
            self.spec["host"],
            port,
            ping_interval=self.spec["interval"],
            ping_timeout=self.spec["timeout"],
            close_timeout=self.spec["close_timeout"],
            max_size=None,
        )
        self.listeners.append(server.close)

    # ------------------------------------------------------------- peerwatch

    async def start_peerwatch(self, strategy: str, port: int, policy: str) -> None:
        import peerwatch

        async def handler(conn: Any) -> None:
            key = id(conn)

            async def close() -> None:
                await conn.close("server closing")

            self.closers[key] = (strategy, close)
            self.emit("accepted", strategy=strategy)
            try:
                greeted = False
                async for message in conn:
                    if self.slow and greeted:
                        await asyncio.sleep(self.spec["slow_read_pause"])
                    else:
                        await conn.enqueue(message)
                        greeted = True
            except Exception as exc:
                self.emit("server-conn-error", strategy=strategy, error=repr(exc))
            finally:
                self.closers.pop(key, None)
                verdict = conn.verdict
                if verdict is not None:
                    self.emit("server-verdict", strategy=strategy, verdict=verdict.describe())

        server = await peerwatch.serve(
            handler,
            self.spec["host"],
            port,
            interval=self.spec["interval"],
            timeout=self.spec["timeout"],
            policy=policy,
        )
        self.listeners.append(server.close)

    # ------------------------------------------------------------- resumable

    async def start_resumable(self, strategy: str, port: int) -> None:
        """A resumable server (issue 12): echoes each session's messages across reconnects.

        Its sessions live in this process (the in-process store: a restarted
        server knows none of them) or, with ``session_store``, in Redis, opened
        as ``serve --session-store`` opens it (so a restarted server finds them).
        """
        import peerwatch

        store = await self.open_store()

        async def handler(session: Any) -> None:
            key = id(session)

            async def close() -> None:
                await session.close()

            self.closers[key] = (strategy, close)
            self.emit("accepted", strategy=strategy)
            try:
                async for message in session:
                    await session.enqueue(message)
            except peerwatch.PeerDead as dead:
                self.emit("server-verdict", strategy=strategy, verdict=dead.verdict.describe())
            except Exception as exc:
                self.emit("server-conn-error", strategy=strategy, error=repr(exc))
            finally:
                self.closers.pop(key, None)

        server = await peerwatch.serve(
            handler,
            self.spec["host"],
            port,
            resume_window=self.spec["resume_window"],
            session_store=store,
            interval=self.spec["interval"],
            timeout=self.spec["timeout"],
        )
        self.listeners.append(server.close)

    async def open_store(self) -> Any:
        """The Redis store named in the spec, once it answers (None: the in-process store)."""
        url = self.spec.get("session_store")
        if not url:
            return None
        from peerwatch.core.session import SessionLimits
        from peerwatch.server.sessions import SessionSettings, open_store

        limits = SessionLimits(window=self.spec["resume_window"])
        store, _ = await open_store(SessionSettings(limits, url, self.spec["timeout"]))
        for _ in range(100):  # the lab starts Redis and this agent at once
            try:
                await store.client.ping()
                return store
            except Exception:
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the session store {url} does not answer")

    # --------------------------------------------------------------- control

    async def close_all(self) -> None:
        """The application closes every connection; the process stays (half-open)."""
        closers = list(self.closers.values())
        self.closers.clear()
        for strategy, close in closers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close(), timeout=1.0)
            self.emit("closed", strategy=strategy)

    async def shutdown(self) -> None:
        """SIGINT: close every connection politely, stop listening, exit."""
        self.emit("shutdown")
        for close in self.listeners:
            close()
        await self.close_all()
        self.done.set()

    def command(self, command: dict[str, Any]) -> None:
        name = command.get("cmd")
        if name == "close-all":
            self.loop.call_soon_threadsafe(lambda: self.spawn(self.close_all()))
        elif name == "stop":
            self.loop.call_soon_threadsafe(self.done.set)


async def serve_all(spec: dict[str, Any], emit: Emit) -> None:
    loop = asyncio.get_running_loop()
    server = LabServer(spec, emit, loop)
    for listener in spec["listeners"]:
        kind, strategy, port = listener["kind"], listener["strategy"], listener["port"]
        if kind == "raw":
            await server.start_raw(strategy, port)
        elif kind == "websockets":
            await server.start_websockets(strategy, port)
        elif kind == "resumable":
            await server.start_resumable(strategy, port)
        else:
            await server.start_peerwatch(strategy, port, listener["policy"])
    loop.add_signal_handler(signal.SIGINT, lambda: server.spawn(server.shutdown()))
    read_commands(server.command)
    server.spawn(watch_stalls(emit))
    emit("ready", ports=[listener["port"] for listener in spec["listeners"]])
    await server.done.wait()


def run_server(spec: dict[str, Any], emit: Emit) -> int:
    asyncio.run(serve_all(spec, emit))
    return 0
