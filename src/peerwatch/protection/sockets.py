"""Hooks on ``socket.socket``: protect each TCP connection once, when it is made.

``connect``/``connect_ex`` cover ``socket.create_connection`` and every
asyncio transport (``loop.sock_connect`` calls ``sock.connect`` on the
non-blocking socket), hence asyncpg, aiohttp, nats.py, redis-py, httpx,
urllib3, pika, py-amqp. ``accept`` covers servers, asyncio's too. Options are
set *before* the connect call when the address is literal, so they also
bound the handshake and hold for a non-blocking connect still in progress.
send/recv are not touched: protection costs nothing after the connection is
made. (uvloop makes its sockets in libuv, outside these hooks.)
``setsockopt`` is wrapped so that a driver setting keepalive or the user
timeout again after connecting does not undo protection (``defence``); it
costs one dictionary lookup per call on sockets that are not defended.
"""

from __future__ import annotations

import errno
import socket

from peerwatch.protection import applying, defence, state
from peerwatch.protection.addresses import UNKNOWN, classify

TYPE_CHECKING = False  # typing costs milliseconds; this runs in every protected program

if TYPE_CHECKING:
    from typing import Any

_originals: dict[str, Any] = {}  # method name -> the socket module's own


def install() -> None:
    """Replace ``socket.socket``'s ``connect``, ``connect_ex``, ``accept``, ``setsockopt``.

    Idempotent.
    """
    if _originals:
        return
    cls = socket.socket
    connect, connect_ex, accept = cls.connect, cls.connect_ex, cls.accept
    setsockopt = cls.setsockopt
    names = ("connect", "connect_ex", "accept", "setsockopt")
    # what the class itself defines (None: inherited from _socket.socket), to restore exactly
    _originals.update({name: vars(cls).get(name) for name in names})

    def protected_connect(self: socket.socket, address: Any) -> None:
        if state.current is None or not applying.is_tcp(self):
            return connect(self, address)
        if _decided_before(self, address):
            return connect(self, address)
        try:
            connect(self, address)
        except BlockingIOError:  # non-blocking connect in progress
            _after_connect(self, address)
            raise
        _after_connect(self, address)

    def protected_connect_ex(self: socket.socket, address: Any) -> int:
        if state.current is None or not applying.is_tcp(self):
            return connect_ex(self, address)
        if _decided_before(self, address):
            return connect_ex(self, address)
        code: int = connect_ex(self, address)
        if code in (0, errno.EINPROGRESS, errno.EAGAIN):
            _after_connect(self, address)
        return code

    def protected_accept(self: socket.socket) -> tuple[socket.socket, Any]:
        conn, address = accept(self)
        settings = state.current
        if settings is not None and settings.accepted and applying.is_tcp(conn):
            applying.protect_socket(conn, address, "accepted")
        return conn, address

    def protected_setsockopt(self: socket.socket, level: int, option: int, *value: Any) -> None:
        if len(value) == 1 and defence.refuses(self, level, option, value[0]):
            return None
        return setsockopt(self, level, option, *value)

    for name, hook, original in (
        ("connect", protected_connect, connect),
        ("connect_ex", protected_connect_ex, connect_ex),
        ("accept", protected_accept, accept),
        ("setsockopt", protected_setsockopt, setsockopt),
    ):
        hook.__name__ = hook.__qualname__ = name
        hook.__doc__ = original.__doc__
        setattr(cls, name, hook)


def uninstall() -> None:
    """Put the original methods back (tests, and ``peerwatch.protection.unprotect``)."""
    for name, original in _originals.items():
        if original is None:
            delattr(socket.socket, name)
        else:
            setattr(socket.socket, name, original)
    _originals.clear()


def _decided_before(sock: socket.socket, address: Any) -> bool:
    """Protect (or leave alone) before connecting when the address says enough; True if done."""
    host = address[0] if isinstance(address, tuple) and address else None
    if classify(host) == UNKNOWN:
        return False
    applying.protect_socket(sock, address, "connect", fresh=True)
    return True


def _after_connect(sock: socket.socket, address: Any) -> None:
    """For a host name: decide from the address the kernel connected to, when it has one."""
    if sock.fileno() < 0:
        return
    try:
        peer = sock.getpeername()
    except OSError:  # still connecting (non-blocking) or failed: judge by the name
        peer = address
    applying.protect_socket(sock, peer, "connect")
