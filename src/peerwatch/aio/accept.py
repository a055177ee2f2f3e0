"""Accepting connections on listening sockets, with a pause and a back-off of our own.

Hand-written instead of ``loop.create_server`` for two measured reasons:

- asyncio's accept loop, on EMFILE, logs the error with a traceback and schedules
  a retry *for every remaining turn of its batch* (up to ``backlog`` = 1,024 times
  per wake-up): 400 clients at ``ulimit -n 256`` wrote 2.7 MB of log. uvloop
  logs one traceback per failed accept too.
- neither ``asyncio.Server`` nor uvloop's server can stop accepting for a while
  and start again; a server at its connection cap must leave new connections
  in the kernel's listen backlog rather than accept and drop them.

The transport is then made by ``loop.connect_accepted_socket``, the public API
both loops implement, so TLS and uvloop behave as before; plain TCP on asyncio's
own selector loops skips its task (``start_transport``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from asyncio.selector_events import BaseSelectorEventLoop
from collections.abc import Callable
from typing import Any

from peerwatch.core.verdicts import errno_code_name

log = logging.getLogger("peerwatch")

#: accept(2) errors that mean "this process or host is out of a resource": retrying at
#: once fails again, so accepting backs off (the same set as trio's ACCEPT_CAPACITY_ERRNOS).
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: accept(2) errors about one connection only (it was reset or aborted while queued).
SKIP_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ECONNRESET})
#: Connections accepted per wake-up before other work of the loop gets its turn.
ACCEPT_BATCH = 128
#: First and longest wait before retrying after a capacity error.
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0
#: An episode that starts within this many seconds of the last one logged is not logged.
EPISODE_QUIET = 60.0


def start_transport(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    protocol: asyncio.BaseProtocol,
    peer: Any,
) -> bool:
    """Make the transport of an accepted plain-TCP socket now, without a task.

    ``connect_accepted_socket`` is a coroutine: a task, a waiter future and two more
    loop callbacks per connection, about 10 % of the server's CPU per connection in
    a reconnect storm (measured side by side, ``bench/storm.py``: 204 against 227 µs).
    asyncio's selector loops make the transport in ``_make_socket_transport`` (what
    their own ``create_server`` calls, with the same signature from 3.7 to 3.13), and
    it calls ``connection_made`` soon by itself. False where the loop is another kind
    (uvloop, the proactor): the caller then uses ``connect_accepted_socket``.
    """
    if not isinstance(loop, BaseSelectorEventLoop):
        return False
    make = getattr(loop, "_make_socket_transport", None)
    if make is None:  # pragma: no cover - a future asyncio without it
        return False
    make(sock, protocol, extra={"peername": peer})  # the peer address accept() gave
    return True


class Episodes:
    """Logs when a pressure episode (fd cap, EMFILE) starts and ends, once each.

    A limit that flaps (a connection closes, the next one fills the slot) would
    otherwise log a pair of lines per connection: episodes that start within
    ``EPISODE_QUIET`` s of the last logged one are counted, not logged.
    """

    __slots__ = ("_logged", "_logged_at", "_unlogged", "since")

    def __init__(self) -> None:
        self.since: float | None = None  # start of the episode under way
        self._logged = False
        self._logged_at = -EPISODE_QUIET
        self._unlogged = 0

    def start(self, now: float, message: str) -> None:
        if self.since is not None:
            return
        self.since = now
        self._logged = now - self._logged_at >= EPISODE_QUIET
        if not self._logged:
            self._unlogged += 1
            return
        if self._unlogged:
            message += f" ({self._unlogged} more such episodes since the last report)"
            self._unlogged = 0
        self._logged_at = now
        log.warning("%s", message)

    def end(self, now: float, message: str) -> None:
        if self.since is None:
            return
        if self._logged:
            log.warning("%s after %.1f s", message, now - self.since)
        self.since = None


class Acceptor:
    """Accepts on ``listeners`` and hands each new socket and its peer's address to ``on_socket``.

    ``pause()`` / ``resume()`` stop and restart accepting (new connections wait
    in the listen backlog). A capacity error (EMFILE...) pauses accepting by
    itself, retries after a doubling delay, and is logged once per episode:
    one warning when it starts, one line when accepting works again.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listeners: list[socket.socket],
        on_socket: Callable[[socket.socket, Any], None],
    ) -> None:
        self._loop = loop
        self.listeners = listeners
        self._on_socket = on_socket
        self._reading = False
        self._paused = False  # by the owner (connection cap)
        self._backoff = 0.0  # > 0 from a capacity error until an accept succeeds again
        self._retry: asyncio.TimerHandle | None = None
        self._episodes = Episodes()
        self._failures = 0
        self.closed = False

    def start(self) -> None:
        self._update()

    def pause(self) -> None:
        self._paused = True
        self._update()

    def resume(self) -> None:
        self._paused = False
        self._update()

    def close(self) -> None:
        """Stop accepting and close the listening sockets."""
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._update()
        for listener in self.listeners:
            listener.close()

    def _update(self) -> None:
        want = not (self.closed or self._paused or self._retry is not None)
        if want == self._reading:
            return
        for listener in self.listeners:
            if want:
                self._loop.add_reader(listener.fileno(), self._accept, listener)
            else:
                self._loop.remove_reader(listener.fileno())
        self._reading = want

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            if not self._reading:
                return  # paused by on_socket (the cap was reached)
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in CAPACITY_ERRNOS:
                    self._back_off(exc)
                    return
                if exc.errno in SKIP_ERRNOS:
                    continue
                raise  # a bug of ours (EBADF, EINVAL): the loop's handler reports it
            if self._backoff:
                self._recovered()
            self._on_socket(sock, peer)

    def _back_off(self, exc: OSError) -> None:
        self._failures += 1
        if not self._backoff:
            self._backoff = BACKOFF_FIRST
            name = errno_code_name(exc.errno or 0)
            self._episodes.start(
                self._loop.time(),
                f"cannot accept connections: {name} ({exc.strerror}); backing off, logged once",
            )
        else:
            self._backoff = min(2 * self._backoff, BACKOFF_MAX)
        self._retry = self._loop.call_later(self._backoff, self._try_again)
        self._update()

    def _try_again(self) -> None:
        """Listen again; the next accept ends the episode or backs off longer."""
        self._retry = None
        self._update()

    def _recovered(self) -> None:
        self._episodes.end(
            self._loop.time(), f"accepting connections again ({self._failures} failed attempts)"
        )
        self._backoff = 0.0
        self._failures = 0
