"""``peerwatch.serve``: accept peerwatch connections and run a handler for each.

What one peer may take from the others is bounded here (docs/SECURITY.md lists
the defaults):

- ``max_connections`` counts connections that completed their HELLO. Sockets
  that never say HELLO have an allowance of their own (``max_handshakes``):
  past it, the one that has waited longest (at least the grace) is dropped to
  make room, so silent sockets cannot lock real peers out. The grace is
  ``HANDSHAKE_GRACE``, or longer while this server's real peers take longer
  (``GRACE_FACTOR`` x the slowest recent HELLO: in a reconnect storm whole
  client hosts lag), never past ``handshake_timeout``.
- open sockets stay under a cap below RLIMIT_NOFILE; at the cap the server
  stops accepting (new peers wait in the listen backlog) until one closes.
- when the allowance is full and the socket just accepted had its bytes waiting
  already, this process is behind (a reconnect storm): it stops accepting until
  the handshakes it holds are read, so the next peers wait in the listen
  backlog, where their wait is not counted as silence (``_check_behind``).
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

from peerwatch.aio.accept import Acceptor, Episodes, start_transport
from peerwatch.aio.connection import Connection
from peerwatch.aio.sockets import listening_socket, tune
from peerwatch.core.budget import MemoryBudget
from peerwatch.core.config import FD_RESERVE, HANDSHAKE_GRACE, Config
from peerwatch.core.frames import GoodbyeCode
from peerwatch.errors import PeerwatchError

if TYPE_CHECKING:
    pass
try:  # Unix: how many received bytes wait unread (FIONREAD)
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows
    fcntl = termios = None  # type: ignore[assignment]

log = logging.getLogger("peerwatch")

#: A handshake may stay silent this many times as long as a recent real peer's took
#: before it counts as silent (at least HANDSHAKE_GRACE, at most handshake_timeout).
GRACE_FACTOR = 2.0
#: Each completed handshake lets the learned grace relax by this factor, so one slow
#: peer does not keep it long: after a few hundred quick ones it is back to the floor.
GRACE_RELAX = 0.99

#: ``async def handler(conn)``: one task per connection, which is closed when it returns.
#: Or ``def handler(conn)``, a plain function returning None: it sets the connection's
#: callbacks (``set_message_callback``, ``add_verdict_callback``) and the connection runs,
#: without a task, until its verdict, ``close()`` or the server's shutdown.
Handler = Callable[[Connection], Awaitable[None] | None]


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
        self.grace = HANDSHAKE_GRACE  # how long a handshake may be silent before it may go
        self.over_budget = 0  # ended because the server was over its memory budget
        self.budget = MemoryBudget(config.memory_budget, self._end_largest_holder)
        self.cap = connection_cap()
        self._open: set[Connection] = set()  # connections whose socket is open
        self._at_cap = Episodes()
        self._cap_timer: asyncio.TimerHandle | None = None
        self._behind: asyncio.TimerHandle | None = None  # paused until handshakes are read
        self._tasks: set[asyncio.Future[Any]] = set()  # TLS handshakes, closes after handlers
        self._handlers: dict[asyncio.Future[None], Connection] = {}  # each handler's task
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

    def _on_socket(self, sock: socket.socket, peer: Any) -> None:
        """A socket just accepted: make its connection, then its transport."""
        loop = self._loop
        assert loop is not None
        sock.setblocking(False)
        conn = self._make_protocol()
        self._open.add(conn)
        if conn.holder is not self:  # a subclass's connection without the back-reference
            conn.closed.add_done_callback(lambda _: self.socket_closed(conn))
        if self._ssl is not None or not self._started(loop, sock, conn, peer):
            kwargs: dict[str, Any] = {}
            if self._ssl is not None:
                kwargs["ssl"] = self._ssl
                kwargs["ssl_handshake_timeout"] = self.config.handshake_timeout
            task = loop.create_task(loop.connect_accepted_socket(lambda: conn, sock, **kwargs))
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._transport_made(conn, sock, t))
        self._check_cap()
        if len(self.handshaking) >= self.config.max_handshakes and _unread(sock):
            self._fall_behind(loop)

    def _started(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, conn: Connection, peer: Any
    ) -> bool:
        """The transport made at once (``start_transport``); False: make it with a task."""
        try:
            return start_transport(loop, sock, conn, peer)
        except OSError as exc:  # e.g. the loop could not watch the descriptor
            log.debug("no transport for an accepted socket: %r", exc)
            self._never_started(conn, sock)
            return True

    def _never_started(self, conn: Connection, sock: socket.socket) -> None:
        """The connection's transport was never made: its socket is ours to close."""
        sock.close()
        self.handshaking.pop(conn, None)
        self.socket_closed(conn)
        if self._behind is not None:
            self._check_behind()

    def _transport_made(
        self, conn: Connection, sock: socket.socket, task: asyncio.Task[Any]
    ) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            # e.g. a failed TLS handshake: the connection never started, its socket is ours
            if not task.cancelled():
                log.debug("connection from an accepted socket failed: %r", task.exception())
            self._never_started(conn, sock)

    def _make_protocol(self) -> Connection:
        assert self._loop is not None
        now = self._loop.time()
        self._drop_stale_handshakes(now, room_for=1)
        conn = Connection(
            self.config, "server", incarnation=self.incarnation, budget=self.budget, holder=self
        )
        if self.on_accept is not None:
            # every accepted connection, refused or not, before its HELLO: a verdict
            # callback added here also sees handshake timeouts and early protocol errors
            self.on_accept(conn)
        self.handshaking[conn] = now
        return conn

    def _drop_stale_handshakes(self, now: float, room_for: int) -> None:
        """Make room for ``room_for`` more handshakes by ending the oldest silent ones.

        Only those that waited the grace or more are dropped: a burst of real
        peers all still in their first round trip is let in, and the allowance is
        exceeded for that moment rather than refusing them.
        """
        excess = len(self.handshaking) + room_for - self.config.max_handshakes
        if excess <= 0:
            return
        dropped = 0
        # A copy of the oldest entries. A lazy walk was measured to make storms worse (it
        # let the acceptor take peers faster than their HELLOs were read, and more were
        # dropped); since the server stops accepting while behind (_fall_behind), there
        # is an excess to walk only when sockets that never spoke fill the allowance.
        for conn, since in list(itertools.islice(self.handshaking.items(), 4 * excess + 16)):
            if dropped >= excess or now - since < self.grace:
                break
            if conn.transport is None or conn.peer_hello is not None or conn.verdict is not None:
                # its TLS handshake is still running (bounded by its own timeout), or its
                # HELLO or verdict just came and the server has not heard yet
                continue
            if _unread(conn.transport.get_extra_info("socket")):
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

    # The connection's calls (``aio.connection.Holder``): the connection holds the server,
    # not three closures of it.

    def handshake_ended(self, conn: Connection, ok: bool) -> None:
        accepted_at = self.handshaking.pop(conn, None)
        if self._behind is not None:
            self._check_behind()
        if accepted_at is None or not ok:
            return  # dropped, or the server shut down; or the verdict came first
        self._learn_grace(accepted_at)
        if self.max_connections is not None and len(self.connections) >= self.max_connections:
            self.refused += 1
            _refuse(conn)
            return
        if conn.verdict is None:  # else verdict_reached has been and gone
            self.connections.add(conn)
        if self.on_connection is not None:
            self.on_connection(conn)
        # the handler's own task, without a wrapping coroutine (0.2 KiB per connection):
        # what a wrapper would do after the handler is the task's done callback, ``_ran``
        try:
            ran = self._handler(conn)
            if ran is None:
                # a plain function: it set the connection's callbacks and returned. No task
                # (about 1.5 KiB per idle connection): the connection runs until its verdict,
                # its close() or the server's shutdown
                return
            task = asyncio.ensure_future(ran)
        except Exception:  # not an awaitable, or the handler raised
            log.exception("handler failed for %s", conn.peer)
            if conn.verdict is None:
                conn.leave(GoodbyeCode.GOING_AWAY, "handler finished", "handler failed")
            return
        self._handlers[task] = conn
        task.add_done_callback(self._ran)

    def verdict_reached(self, conn: Connection) -> None:
        self.connections.discard(conn)

    def socket_closed(self, conn: Connection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self._check_cap()

    def _learn_grace(self, accepted_at: float) -> None:
        """A real peer said HELLO after ``now - accepted_at`` s: the grace follows its kind.

        Only completed handshakes teach it, so silent sockets cannot stretch it;
        a peer that answers slowly on purpose stretches it to ``handshake_timeout``
        at most, which bounds every handshake anyway.
        """
        assert self._loop is not None
        took = self._loop.time() - accepted_at
        self.grace = min(
            self.config.handshake_timeout,
            max(HANDSHAKE_GRACE, GRACE_FACTOR * took, self.grace * GRACE_RELAX),
        )

    # ------------------------------------------------------- behind in a storm

    def _fall_behind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop accepting: the allowance is full of peers that already spoke, unread.

        Accepting more would only start their clocks: a peer accepted now waits
        behind the others to be read, and its wait would count as silence.
        Peers that have not spoken do not pause accepting (a slowloris must not
        hold real peers in the backlog); whatever happens, accepting resumes
        after ``HANDSHAKE_GRACE`` (a handshake that never ends, e.g. TLS, is
        bounded by its own timeout and the allowance's drops).
        """
        if self._behind is None:
            self._behind = loop.call_later(HANDSHAKE_GRACE, self._caught_up)
            self._update_accepting()

    def _check_behind(self) -> None:
        """Resume well below the allowance (not at every handshake: one accept per
        handshake read would pause and resume the listener for each peer)."""
        allowance = self.config.max_handshakes
        if len(self.handshaking) <= allowance - max(1, allowance // 4):
            self._caught_up()

    def _caught_up(self) -> None:
        if self._behind is not None:
            self._behind.cancel()
            self._behind = None
            self._update_accepting()

    def _update_accepting(self) -> None:
        """Accept unless at the fd cap or behind: either makes new peers wait in the backlog."""
        acceptor = self._acceptor
        if acceptor is None or acceptor.closed:
            return
        if self._at_cap.since is not None or self._behind is not None:
            acceptor.pause()
        else:
            acceptor.resume()

    # ------------------------------------------------------------ the fd cap

    def _check_cap(self) -> None:
        """Pause accepting at the cap; resume below it. Logged once per episode."""
        acceptor, loop, cap = self._acceptor, self._loop, self.cap
        if cap is None or acceptor is None or loop is None or acceptor.closed:
            return
        now = loop.time()
        open_now = len(self._open)
        if open_now >= cap:
            if self._at_cap.since is None:
                self._at_cap.start(
                    now,
                    f"{open_now} connections open, the cap below the file descriptor limit:"
                    " new connections wait in the listen backlog until some close",
                )
                self._update_accepting()
            # silent handshakes yield their sockets to peers waiting in the backlog
            self._drop_stale_handshakes(now, room_for=self.config.max_handshakes)
            if self._cap_timer is None and self.handshaking:
                oldest = next(iter(self.handshaking.values()))
                self._cap_timer = loop.call_at(
                    max(now, oldest + self.grace) + 0.05, self._cap_timer_fired
                )
        elif self._at_cap.since is not None and open_now <= cap - cap // 8:
            # resumed only well below the cap: at the cap itself, every close would let
            # exactly one accept through and pause again
            self._at_cap.end(now, f"accepting connections again ({open_now} open)")
            self._update_accepting()

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
        self._overload(victim)
        return True

    def _overload(self, victim: Connection) -> None:
        """End ``victim``, chosen as the largest holder, with GOODBYE(OVERLOADED)."""
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

    # ------------------------------------------------------------ running

    def _ran(self, task: asyncio.Future[Any]) -> None:
        """The handler returned, raised or was cancelled: close its connection with GOODBYE."""
        conn = self._handlers.pop(task)
        if not task.cancelled():
            error = task.exception()
            if error is not None and not isinstance(error, PeerwatchError):
                # a PeerwatchError: the verdict says it all
                log.error("handler failed for %s", conn.peer, exc_info=error)
        if conn.verdict is None:
            closing = asyncio.ensure_future(conn.close("handler finished"))
            self._tasks.add(closing)
            closing.add_done_callback(self._tasks.discard)

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
        tasks = [*self._handlers, *self._tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=drain)

    def close(self) -> None:
        """Stop accepting and close the listening socket (open connections go on)."""
        if self._acceptor is not None and not self._acceptor.closed:
            self._acceptor.close()
        if self._cap_timer is not None:
            self._cap_timer.cancel()
            self._cap_timer = None
        if self._behind is not None:
            self._behind.cancel()
            self._behind = None
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


def _unread(sock: socket.socket | None) -> int:
    """Bytes the kernel holds for us on this socket and we have not read (FIONREAD).

    0 where the platform cannot tell: the allowance then works as if none waited.
    """
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
