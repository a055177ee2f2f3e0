"""Sockets peerwatch does not own: what callers may pass, and a view that changes nothing.

``guard()``, ``tcp_info()``, ``assess()`` and ``check()`` take a socket in any of
three forms (``SocketRef``): a ``socket.socket``, anything with ``fileno()`` (a
driver's connection, an ``ssl.SSLSocket``), or a bare descriptor number. They
only borrow the descriptor; none of them closes it.


``socket.socket(fileno=fd)`` is how Python reads options of a descriptor it
does not own, but it has a side effect: when ``socket.setdefaulttimeout()``
was called anywhere in the process, the new object puts the descriptor in
non-blocking mode (CPython ``sock_initobj``), and O_NONBLOCK belongs to the
open file, so the owner's blocking socket stops blocking. ``borrow`` undoes
that, and the caller must ``detach()`` the view (never close it).
"""

from __future__ import annotations

import _socket
import socket
from typing import Protocol, TypeAlias


class HasFileno(Protocol):
    """Anything that can name its descriptor, as the ``select`` module accepts."""

    def fileno(self) -> int: ...


#: A socket given to a kernel-facing call: an object, anything with ``fileno()``, or an fd.
SocketRef: TypeAlias = socket.socket | HasFileno | int


def descriptor_of(sock: SocketRef) -> int:
    """The descriptor number of ``sock``; negative when a socket object was already closed."""
    return sock if isinstance(sock, int) else sock.fileno()


def borrow(fd: int, family: int = -1, kind: int = -1, proto: int = -1) -> socket.socket:
    """A view of ``fd``; pass family/kind/proto when known to skip the getsockopt calls."""
    if socket.getdefaulttimeout() is None:
        return socket.socket(family, kind, proto, fileno=fd)
    import fcntl

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    view = socket.socket(family, kind, proto, fileno=fd)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return view


def borrow_raw(fd: int) -> _socket.socket:
    """The same as a bare ``_socket.socket`` (IPv4 stream assumed, enough for getsockopt).

    ``socket.socket``'s Python ``__init__`` costs over a microsecond; this is for
    ``peerwatch.check``, whose whole budget is a few. Detach it, never close it.
    """
    if socket.getdefaulttimeout() is None:
        return _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM, 0, fd)
    import fcntl

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    view = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM, 0, fd)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return view
