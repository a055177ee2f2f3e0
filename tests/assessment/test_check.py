"""``peerwatch.check``: the kernel's verdict on a pooled connection, on real loopback sockets."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator

import pytest

import peerwatch
from peerwatch.assessment.model import Finding
from peerwatch.kernel.tcpinfo import TcpState, tcp_info

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname(), timeout=5)
    server, _ = listener.accept()
    listener.close()
    try:
        yield client, server
    finally:
        client.close()
        server.close()


def wait_state(sock: socket.socket, state: TcpState) -> None:
    deadline = time.monotonic() + 2
    while (info := tcp_info(sock)) is None or info.state is not state:
        assert time.monotonic() < deadline, f"never reached {state.name}: {info}"
        time.sleep(0.005)


Target = Callable[[socket.socket], object]
TARGETS: dict[str, Target] = {
    "socket": lambda s: s,
    "descriptor": lambda s: s.fileno(),
    "has fileno": lambda s: type("Conn", (), {"fileno": lambda self: s.fileno()})(),
}


@pytest.mark.parametrize("as_", TARGETS)
def test_an_established_quiet_connection_is_usable(pair, as_) -> None:
    client, _ = pair
    verdict = peerwatch.check(TARGETS[as_](client))
    assert not verdict.dead and verdict.finding is Finding.OK


@pytest.mark.parametrize("as_", TARGETS)
def test_a_connection_the_server_closed_is_dead(pair, as_) -> None:
    client, server = pair
    server.close()
    wait_state(client, TcpState.CLOSE_WAIT)
    verdict = peerwatch.check(TARGETS[as_](client))
    assert verdict.dead and verdict.finding is Finding.PEER_CLOSED, verdict


def test_a_connection_the_server_reset_is_dead_and_its_error_is_left_for_the_driver(pair) -> None:
    client, server = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()  # RST
    wait_state(client, TcpState.CLOSE)
    verdict = peerwatch.check(client)
    assert verdict.dead and verdict.finding is Finding.CLOSED, verdict
    # check() consumed nothing: the driver still gets the reset on its next call
    with pytest.raises(ConnectionResetError):
        client.recv(1)


def test_check_reads_nothing_from_the_socket(pair) -> None:
    client, server = pair
    server.sendall(b"pending")
    deadline = time.monotonic() + 2
    while (info := tcp_info(client)) is None or not info.bytes_received:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert not peerwatch.check(client).dead
    assert client.recv(100) == b"pending"


def test_a_socket_closed_by_this_process_or_not_a_socket_is_dead(pair, tmp_path) -> None:
    client, _ = pair
    client.close()
    assert peerwatch.check(client).finding is Finding.CLOSED
    with open(tmp_path / "f", "w") as f:
        assert peerwatch.check(f.fileno()).dead
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        assert peerwatch.check(listener).finding is Finding.LISTENING


@pytest.mark.parametrize(
    "reader",
    [peerwatch.guard, peerwatch.tcp_info, peerwatch.check, peerwatch.assess],
    ids=["guard", "tcp_info", "check", "assess"],
)
def test_reading_a_descriptor_keeps_its_blocking_mode_under_a_default_timeout(pair, reader):
    """Regression: socket.socket(fileno=fd) made the owner's blocking descriptor non-blocking."""
    client, _ = pair
    client.setblocking(True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(3.0)
    try:
        reader(client.fileno())
    finally:
        socket.setdefaulttimeout(previous)
    assert not fcntl.fcntl(client.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK


def test_a_server_that_stopped_reading_is_doomed(pair) -> None:
    """Its receive buffer full, the server advertises a zero window: a request would stall."""
    client, server = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    deadline = time.monotonic() + 5
    while (info := tcp_info(client)) is None or info.snd_wnd != 0:
        assert time.monotonic() < deadline, "the window never closed"
        try:
            client.send(b"x" * 65536)
        except BlockingIOError:
            time.sleep(0.01)
    verdict = peerwatch.check(client)
    assert verdict.dead and verdict.finding is Finding.PEER_NOT_READING, verdict
    server.settimeout(0.2)
    deadline = time.monotonic() + 5
    while peerwatch.check(client).dead:  # reading again opens the window: usable again
        assert time.monotonic() < deadline, peerwatch.check(client)
        with contextlib.suppress(TimeoutError):
            server.recv(1 << 20)
