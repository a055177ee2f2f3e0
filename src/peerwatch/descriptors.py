"""What the kernel-facing calls accept as "a socket": one definition for all of them.

``guard()``, ``tcp_info()`` and ``assess()`` work on sockets peerwatch does not
own: a ``socket.socket``, any object with ``fileno()`` (a driver's connection,
a ``ssl.SSLSocket``, a file-like wrapper), or a bare descriptor number. They
only borrow the descriptor; none of them closes it.
"""

from __future__ import annotations

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
