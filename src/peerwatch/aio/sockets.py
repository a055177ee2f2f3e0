"""Creating the sockets peerwatch owns, with the kernel knobs applied before connect/listen.

Knobs go on before ``connect`` (TCP_USER_TIMEOUT then also bounds the SYN
retries) and on the listening socket (Linux copies them to accepted sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading

from peerwatch.core.config import Config
from peerwatch.kernel.knobs import Applied, apply_knobs, knobs_for
from peerwatch.kernel.tcpinfo import TcpInfo, own_socket_tcp_info

log = logging.getLogger("peerwatch")

#: Receive buffer shared by the connections of a thread: asyncio's plain ``data_received``
#: path allocates a 256 KiB bytes object per read (glibc serves it with mmap, then
#: mremap and munmap: three system calls more than the read itself).
_RECV_BUFFER = threading.local()
RECV_BUFFER_SIZE = 256 * 1024


def transport_tcp_info(transport: asyncio.BaseTransport | None) -> TcpInfo | None:
    """TCP_INFO of the socket under ``transport``; None without one (or off Linux)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    return own_socket_tcp_info(sock) if sock is not None else None


def recv_view() -> memoryview:
    """This thread's receive buffer (``BufferedProtocol.get_buffer``)."""
    view: memoryview | None = getattr(_RECV_BUFFER, "view", None)
    if view is None:
        view = _RECV_BUFFER.view = memoryview(bytearray(RECV_BUFFER_SIZE))
    return view


def tune(sock: socket.socket, config: Config) -> Applied | None:
    """Apply the kernel backup knobs for ``config``; report what could not be applied."""
    if not config.kernel_knobs:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return None
    applied = apply_knobs(sock, knobs_for(config.kernel_bound))
    if not applied.complete:
        log.debug("kernel knobs not applied on this platform: %s", ", ".join(applied.missing()))
    return applied


def listening_socket(
    host: str | None,
    port: int,
    config: Config,
    *,
    reuse_port: bool = False,
    backlog: int = 1024,
    family: int = socket.AF_UNSPEC,
) -> socket.socket:
    """A bound, listening, non-blocking socket with SO_REUSEADDR (and SO_REUSEPORT if asked).

    SO_REUSEADDR lets a restarted server bind while old connections sit in
    TIME_WAIT; SO_REUSEPORT lets several processes each own a listening socket on
    the same port, the kernel balancing accepts among them (Linux >= 3.9).
    """
    infos = socket.getaddrinfo(
        host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE | socket.AI_ADDRCONFIG
    )
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    af, kind, proto, _, addr = infos[0]
    sock = socket.socket(af, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise OSError("SO_REUSEPORT is not available on this platform")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if af == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        tune(sock, config)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def half_close(transport: asyncio.Transport) -> None:
    """Send FIN (shutdown SHUT_WR) where the transport can: GOODBYE is followed by EOF."""
    if transport.can_write_eof():
        # a peer that reset meanwhile makes shutdown() fail with ENOTCONN: the
        # verdict is ours already, and the transport learns it on its own
        with contextlib.suppress(OSError):
            transport.write_eof()
