"""Every kernel-facing call takes a socket in the same three forms, and borrows it."""

from __future__ import annotations

import fcntl
import os
import socket
import sys

import pytest

from bad_states import pair
from peerwatch.assessment.checking import check
from peerwatch.assessment.live import assess
from peerwatch.assessment.model import Status
from peerwatch.kernel.borrowing import SocketRef, descriptor_of
from peerwatch.kernel.foreign import tcp_sockets
from peerwatch.kernel.guarding import guard
from peerwatch.kernel.pidfd import open_process
from peerwatch.kernel.tcpinfo import TcpState, tcp_info


class Wrapper:
    """A driver's connection object: not a socket, but it names its descriptor."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux-only")
@pytest.mark.parametrize("form", ["socket", "object with fileno", "descriptor"])
def test_guard_tcp_info_assess_and_check_take_every_form_and_close_nothing(form: str) -> None:
    client, server = pair()
    with client, server:
        ref: SocketRef = {
            "socket": client,
            "object with fileno": Wrapper(client),
            "descriptor": client.fileno(),
        }[form]
        assert descriptor_of(ref) == client.fileno()
        info = tcp_info(ref)
        assert info is not None and info.state is TcpState.ESTABLISHED
        assert guard(ref, timeout=5).complete
        assert assess(ref).status is Status.ALIVE
        assert not check(ref).dead
        client.sendall(b"still open")  # borrowed, not closed: the connection still works
        assert server.recv(10) == b"still open"


def test_a_closed_socket_object_has_a_negative_descriptor() -> None:
    sock = socket.socket()
    sock.close()
    assert descriptor_of(sock) < 0
    assert tcp_info(sock) is None
    assert check(sock).dead


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfd (Linux >= 5.3)")
def test_reading_a_processs_sockets_keeps_their_blocking_mode_under_a_default_timeout() -> None:
    """Regression: the borrowed duplicate shares the owner's open file, O_NONBLOCK included."""
    client, server = pair()
    with client, server:
        client.setblocking(True)
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(3.0)
        try:
            with open_process(os.getpid()) as process:  # this process stands in for the owner
                seen = [found for found, _dup in tcp_sockets(process)]
        finally:
            socket.setdefaulttimeout(previous)
        assert client.fileno() in {found.fd for found in seen}
        assert not fcntl.fcntl(client.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
