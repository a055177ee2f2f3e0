"""``peerwatch.serve``: accept peerwatch connections and run a handler for each.

What one peer may take from the others is bounded here (docs/SECURITY.md lists
the defaults):

- ``max_connections`` counts connections that completed their HELLO. Sockets
  that never say HELLO have an allowance of their own (``max_handshakes``):
  past it, the one that has waited longest (at least ``HANDSHAKE_GRACE``) is
  dropped to make room, so silent sockets cannot lock real peers out.
- open sockets stay under a cap below RLIMIT_NOFILE; at the cap the server
  stops accepting (new peers wait in the listen backlog) until one closes.
- ``memory_budget``: the bytes all connections hold for their peers; past it
  the largest holder gets GOODBYE(OVERLOADED) and the others are untouched.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import ssl as ssl_module
import sys
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from peerwatch.aio.accept import Acceptor, Episodes
from peerwatch.aio.connection import Connection
from peerwatch.aio.handles import Opening
from peerwatch.aio.sockets import listening_socket, tune
from peerwatch.core.budget import MemoryBudget
from peerwatch.core.config import DEFAULT_HOST, FD_RESERVE, HANDSHAKE_GRACE, Config, Settings
from peerwatch.core.frames import GoodbyeCode
from peerwatch.errors import PeerwatchError

if TYPE_CHECKING:
    from typing_extensions import Unpack
try:  # Unix: how many received bytes wait unread (FIONREAD)
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows
    fcntl = termios = None  # type: ignore[assignment]

log = logging.getLogger("peerwatch")

Handler = Callable[[Connection], Awaitable[None]]


def connection_cap() -> int | None:
    """Sockets this process may still open for connections: RLIMIT_NOFILE's soft limit,
    less the descriptors already open, less a reserve (``FD_RESERVE``, at most an eighth
    of the limit) for the handler, logging and metrics. None where there is no limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not Unix
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        open_now = len(os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"))
    except OSError:
        open_now = 0
    return max(1, soft - open_now - min(FD_RESERVE, soft // 8))


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
        self.connections: set[Connection] = set()  # past their HELLO, running the handler
        self.handshaking: dict[Connection, float] = {}  # no HELLO yet -> accepted at (oldest first)
        self.refused = 0  # max_connections reached at their HELLO
        self.dropped_handshakes = 0  # made room for newer ones (handshake allowance full)
        self.over_budget = 0  # ended because the server was over its memory budget
        self.budget = MemoryBudget(config.memory_budget, self._end_largest_holder)
        self.cap = connection_cap()
        self._open: set[Connection] = set()  # connections whose socket is open
        self._at_cap = Episodes()
        self._cap_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._acceptor: Acceptor | None = None
        self._ssl: ssl_module.SSLContext | None = None
        self._stopped: asyncio.Future[None] | None = None

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._acceptor.listeners) if self._acceptor is not None else ()

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    def _listen(self, listener: socket.socket, ssl: ssl_module.SSLContext | None) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._ssl = ssl
        self._stopped = loop.create_future()
        self._acceptor = Acceptor(loop, [listener], self._on_socket)
        self._acceptor.start()

    # ----------------------------------------------------------------- accepting

    def _on_socket(self, sock: socket.socket) -> None:
        """A socket just accepted: make its connection, then its transport."""
        loop = self._loop
        assert loop is not None
        sock.setblocking(False)
        conn = self._make_protocol()
        self._open.add(conn)
        conn.closed.add_done_callback(lambda _: self._socket_closed(conn))
        kwargs: dict[str, Any] = {}
        if self._ssl is not None:
            kwargs["ssl"] = self._ssl
            kwargs["ssl_handshake_timeout"] = self.config.handshake_timeout
        task = loop.create_task(loop.connect_accepted_socket(lambda: conn, sock, **kwargs))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._transport_made(conn, sock, t))
        self._check_cap()

    def _transport_made(
        self, conn: Connection, sock: socket.socket, task: asyncio.Task[Any]
    ) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            # e.g. a failed TLS handshake: the connection never started, its socket is ours
            if not task.cancelled():
                log.debug("connection from an accepted socket failed: %r", task.exception())
            sock.close()
            self.handshaking.pop(conn, None)
            self._socket_closed(conn)

    def _make_protocol(self) -> Connection:
        assert self._loop is not None
        now = self._loop.time()
        self._drop_stale_handshakes(now, room_for=1)
        conn = Connection(self.config, "server", incarnation=self.incarnation, budget=self.budget)
        if self.on_accept is not None:
            # every accepted connection, refused or not, before its HELLO: a verdict
            # callback added here also sees handshake timeouts and early protocol errors
            self.on_accept(conn)
        self.handshaking[conn] = now
        conn.ready.add_done_callback(lambda fut: self._handshake_done(conn, fut))
        return conn

    def _drop_stale_handshakes(self, now: float, room_for: int) -> None:
        """Make room for ``room_for`` more handshakes by ending the oldest silent ones.

        Only those that waited ``HANDSHAKE_GRACE`` or more are dropped: a burst
        of real peers all still in their first round trip is let in, and the
        allowance is exceeded for that moment rather than refusing them.
        """
        excess = len(self.handshaking) + room_for - self.config.max_handshakes
        if excess <= 0:
            return
        dropped = 0
        # A copy of the oldest entries, as before. A lazy walk would save the copy (6% of a
        # 10,000-peer storm) but, measured, lets the acceptor take peers from the kernel's
        # backlog faster than their HELLOs are read, and more were dropped; see the Scale
        # analysis in docs/BENCHMARKS.md before changing it.
        for conn, since in list(itertools.islice(self.handshaking.items(), 4 * excess + 16)):
            if dropped >= excess or now - since < HANDSHAKE_GRACE:
                break
            if conn.transport is None or conn.peer_hello is not None or conn.verdict is not None:
                # its TLS handshake is still running (bounded by its own timeout), or its
                # HELLO or verdict just came and the server has not heard yet
                continue
            if _unread_bytes(conn.transport):
                # its bytes (the HELLO) wait in our own receive queue: the peer is not
                # silent, this process is behind (a reconnect storm), and the younger
                # ones are in the same case. Drop none now (one ioctl per accept, not
                # one per waiting peer); once this process has read them, a slowloris'
                # stray byte no longer counts and the silent ones go.
                break
            del self.handshaking[conn]
            dropped += 1
            self.dropped_handshakes += 1
            conn.leave(
                GoodbyeCode.HANDSHAKE_TIMEOUT,
                "no HELLO in time, the server needs the slot",
                f"dropped after {now - since:.1f} s without HELLO: handshake allowance"
                f" ({self.config.max_handshakes}) full",
            )

    def _handshake_done(self, conn: Connection, ready: asyncio.Future[None]) -> None:
        if self.handshaking.pop(conn, None) is None:
            return  # dropped, or the server shut down
        if ready.cancelled() or ready.exception() is not None:
            return
        if self.max_connections is not None and len(self.connections) >= self.max_connections:
            self.refused += 1
            _refuse(conn)
            return
        self.connections.add(conn)
        conn.add_verdict_callback(lambda c, _: self.connections.discard(c))
        if self.on_connection is not None:
            self.on_connection(conn)
        task = asyncio.get_running_loop().create_task(self._run(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ the fd cap

    def _socket_closed(self, conn: Connection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self._check_cap()

    def _check_cap(self) -> None:
        """Pause accepting at the cap; resume below it. Logged once per episode."""
        acceptor, loop, cap = self._acceptor, self._loop, self.cap
        if cap is None or acceptor is None or loop is None or acceptor.closed:
            return
        now = loop.time()
        open_now = len(self._open)
        if open_now >= cap:
            if self._at_cap.since is None:
                acceptor.pause()
                self._at_cap.start(
                    now,
                    f"{open_now} connections open, the cap below the file descriptor limit:"
                    " new connections wait in the listen backlog until some close",
                )
            # silent handshakes yield their sockets to peers waiting in the backlog
            self._drop_stale_handshakes(now, room_for=self.config.max_handshakes)
            if self._cap_timer is None and self.handshaking:
                oldest = next(iter(self.handshaking.values()))
                self._cap_timer = loop.call_at(
                    max(now, oldest + HANDSHAKE_GRACE) + 0.05, self._cap_timer_fired
                )
        elif self._at_cap.since is not None and open_now <= cap - cap // 8:
            # resumed only well below the cap: at the cap itself, every close would let
            # exactly one accept through and pause again
            self._at_cap.end(now, f"accepting connections again ({open_now} open)")
            acceptor.resume()

    def _cap_timer_fired(self) -> None:
        self._cap_timer = None
        self._check_cap()

    # ---------------------------------------------------------- memory budget

    def _end_largest_holder(self) -> bool:
        """Over the memory budget: GOODBYE to the connection holding the most for its peer."""
        candidates = itertools.chain(self.connections, self.handshaking)
        victim = max(
            (c for c in candidates if c.verdict is None), key=lambda c: c.held_bytes, default=None
        )
        if victim is None or victim.held_bytes == 0:
            return False
        held, used = victim.held_bytes, self.budget.used
        self.over_budget += 1
        self.handshaking.pop(victim, None)
        log.warning(
            "server memory budget exceeded (%d of %d bytes): ending %s, which held %d",
            used,
            self.budget.limit,
            victim.peer,
            held,
        )
        victim.leave(
            GoodbyeCode.OVERLOADED,
            f"server memory budget exceeded: this connection held {held} bytes",
            f"over the server's memory budget ({used} of {self.budget.limit} bytes):"
            f" this connection held the most, {held} bytes",
        )
        return True

    # ------------------------------------------------------------ running

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
        self.close()
        everyone = [*self.handshaking, *self.connections]
        self.handshaking.clear()
        for conn in everyone:
            conn.leave(GoodbyeCode.GOING_AWAY, reason, f"server shutdown: {reason}")
        waits = [asyncio.ensure_future(c.wait_closed()) for c in everyone if c.transport]
        if waits:
            await asyncio.wait(waits, timeout=drain)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=drain)

    def close(self) -> None:
        """Stop accepting and close the listening socket (open connections go on)."""
        if self._acceptor is not None and not self._acceptor.closed:
            self._acceptor.close()
        if self._cap_timer is not None:
            self._cap_timer.cancel()
            self._cap_timer = None
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    async def wait_closed(self) -> None:
        """Return once ``close()`` or ``shutdown()`` stopped the server."""
        if self._stopped is not None:
            await asyncio.shield(self._stopped)

    async def serve_forever(self) -> None:
        """Serve until ``close()``/``shutdown()`` (or cancellation)."""
        assert self._stopped is not None
        await asyncio.shield(self._stopped)

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


def _unread_bytes(transport: asyncio.BaseTransport) -> int:
    """Bytes the kernel holds for us on this connection and we have not read (FIONREAD).

    0 where the platform cannot tell: the allowance then works as if none waited.
    """
    sock = transport.get_extra_info("socket")
    request = getattr(termios, "FIONREAD", None) if termios is not None else None
    if sock is None or request is None or fcntl is None:
        return 0
    try:
        answer = fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0")
    except OSError:
        return 0
    return int.from_bytes(answer, sys.byteorder)


def _refuse(conn: Connection) -> None:
    conn.leave(GoodbyeCode.OVERLOADED, "too many connections", "refused: max_connections reached")


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
    **settings: Unpack[Settings],
) -> Opening[Server]:
    """Listen on ``host:port`` and run ``await handler(conn)`` for every peer after its HELLO:
    ``server = await serve(...)``, or ``async with serve(...) as server:`` to have it shut
    down (GOODBYE to every peer) on the way out.

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
    """
    cfg = Config.from_overrides(config, settings)
    starting = start_server(
        handler,
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
    return Opening(starting, _shut_down)


async def _shut_down(server: Server) -> None:
    await server.shutdown()
    await server.wait_closed()


async def start_server(
    handler: Handler,
    host: str | None,
    port: int,
    cfg: Config,
    *,
    reuse_port: bool = False,
    ssl: ssl_module.SSLContext | None = None,
    sock: socket.socket | None = None,
    backlog: int = 1024,
    max_connections: int | None = None,
    on_connection: Callable[[Connection], None] | None = None,
    on_accept: Callable[[Connection], None] | None = None,
    incarnation: int | None = None,
) -> Server:
    """``serve`` with its settings already a ``Config``: listening once it returns."""
    if sock is None:
        sock = listening_socket(host, port, cfg, reuse_port=reuse_port, backlog=backlog)
    else:
        tune(sock, cfg)
        sock.listen(backlog)
        sock.setblocking(False)
    server = Server(
        handler,
        cfg,
        max_connections=max_connections,
        on_connection=on_connection,
        on_accept=on_accept,
        incarnation=incarnation,
    )
    server._listen(sock, ssl)
    return server
