"""Real loopback connections put into the bad states assess() and inspect must recognise.

Each helper returns live sockets whose state the kernel itself produced: no
figure is made up. The caller closes them (use them in ``with`` or a fixture).
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable

from peerwatch.kernel.tcpinfo import TcpInfo, TcpState, tcp_info


def private_loopback() -> str:
    """A random address of 127.0.0.0/8 (all of it is loopback on Linux), so that a test can
    pick its own connections out of a busy host's by address, not only by port."""
    return f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def listener(*, rcvbuf: int | None = None, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf is not None:  # before listen(): accepted sockets inherit it, and so does the window
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((host, 0))
    sock.listen(8)
    return sock


def pair(
    *, rcvbuf: int | None = None, host: str = "127.0.0.1"
) -> tuple[socket.socket, socket.socket]:
    """(client, accepted server side) on loopback; the server listens on ``host``."""
    with listener(rcvbuf=rcvbuf, host=host) as lsock:
        client = socket.create_connection(lsock.getsockname(), timeout=5)
        server, _ = lsock.accept()
    return client, server


def wait_for(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def info_of(sock: socket.socket) -> TcpInfo:
    info = tcp_info(sock)
    assert info is not None
    return info


def close_wait_pair(host: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
    """Client in CLOSE_WAIT: the server closed, the client keeps its socket open.

    Returns (client, server); the server socket is already closed (kept only so
    the caller has a uniform shape).
    """
    client, server = pair(host=host)
    server.shutdown(socket.SHUT_WR)  # FIN; wait for its ACK, so the orphan is in FIN_WAIT2
    wait_for(lambda: info_of(server).state is TcpState.FIN_WAIT2, what="FIN_WAIT2")
    server.close()
    wait_for(lambda: info_of(client).state is TcpState.CLOSE_WAIT, what="CLOSE_WAIT")
    return client, server


def reset_pair() -> tuple[socket.socket, socket.socket]:
    """Client whose peer aborted (SO_LINGER 0 + close: RST); the client has not noticed yet."""
    client, server = pair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()
    wait_for(lambda: info_of(client).state is TcpState.CLOSE, what="CLOSE after RST")
    return client, server


def zero_window_pair(host: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
    """Client writing to a server application that never reads, until the window closes.

    The server's receive buffer is small, so the window reaches zero after a few
    kilobytes; the client keeps data queued behind it and probes the window.
    """
    client, server = pair(rcvbuf=4096, host=host)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    client.setblocking(False)
    chunk = b"x" * 4096
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            client.send(chunk)
        except BlockingIOError:
            if info_of(client).snd_wnd == 0:
                break
            time.sleep(0.02)
    wait_for(lambda: info_of(client).snd_wnd == 0, what="zero window")
    return client, server
