"""Read back what a driver's real socket carries, without asking the driver for it.

Every descriptor of this process is looked at (``/proc/self/fd``); those that
are TCP sockets connected to the server's address are read with
getsockopt. So a test sees the kernel's truth about the driver's own socket,
whatever private attribute the driver keeps it in.
"""

from __future__ import annotations

import contextlib
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
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            copy = os.dup(int(name))
        except OSError:
            continue
        try:
            dup = socket.socket(fileno=copy)
        except OSError:  # not a socket
            os.close(copy)
            continue
        with contextlib.suppress(OSError), dup:
            if dup.type != socket.SOCK_STREAM or dup.family != socket.AF_INET:
                continue
            if dup.getpeername() != address:
                continue
            get = dup.getsockopt
            found.append(
                Options(
                    keepalive=get(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    idle=get(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    interval=get(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    count=get(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                    user_timeout_ms=get(socket.IPPROTO_TCP, 18),
                )
            )
    return found


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
