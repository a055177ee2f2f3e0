"""Read back what a driver's real socket carries, without asking the driver for it.

Every descriptor of this process is looked at (``/proc/self/fd``); those that
are TCP sockets connected to the server's address are read with
getsockopt. So a test sees the kernel's truth about the driver's own socket,
whatever private attribute the driver keeps it in.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from peerwatch.integrations.options import derived_knobs


@dataclass(frozen=True)
class Options:
    keepalive: int
    idle: int
    interval: int
    count: int
    user_timeout_ms: int


def sockets_to(address: tuple[str, int]) -> list[Options]:
    """The options on every socket of this process connected to ``address``."""
    socks = connected_sockets(address)
    try:
        return [read_options(s) for s in socks]
    finally:
        for s in socks:
            s.close()


def read_options(sock: socket.socket) -> Options:
    get = sock.getsockopt
    return Options(
        keepalive=get(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        idle=get(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        interval=get(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        count=get(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        user_timeout_ms=get(socket.IPPROTO_TCP, 18),
    )


def connected_sockets(address: tuple[str, int]) -> list[socket.socket]:
    """Duplicates of this process's sockets connected to ``address`` (close them after use).

    A duplicate reads the same kernel socket (TCP_INFO, options), whoever owns it.
    Closing it does not close the connection while the owner's descriptor is open.
    """
    found: dict[object, socket.socket] = {}  # by local address: one socket, several fds
    for name in os.listdir("/proc/self/fd"):
        try:
            copy = os.dup(int(name))
        except OSError:
            continue
        try:
            dup = socket.socket(fileno=copy)
        except OSError:
            os.close(copy)
            continue
        try:
            local = dup.getsockname()
            if (
                dup.type == socket.SOCK_STREAM
                and dup.getpeername() == address
                and local not in found
            ):
                found[local] = dup
                continue
        except OSError:
            pass
        dup.close()
    return list(found.values())


def expected(timeout: float, **kwargs: float) -> Options:
    """What the integrations derive for ``timeout`` on a socket before it connects."""
    k = derived_knobs(timeout, **kwargs)  # type: ignore[arg-type]
    return Options(1, k.keepalive_idle, k.keepalive_interval, k.keepalive_count, k.user_timeout_ms)


def guarded(options: Options, timeout: float) -> bool:
    """guard() on a connected socket: the same timers, the user timeout less this socket's lead."""
    want = expected(timeout)
    return (
        options.keepalive == 1
        and (options.idle, options.interval, options.count)
        == (want.idle, want.interval, want.count)
        and (timeout - 1) * 1000 < options.user_timeout_ms <= want.user_timeout_ms
    )
