"""guard() on real loopback sockets: what it sets, what it refuses, what it reports."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from peerwatch.errors import ConfigError
from peerwatch.kernel.guarding import guard
from peerwatch.kernel.knobs import TCP_USER_TIMEOUT

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux options")


def tcp_opt(sock: socket.socket, opt: int) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, opt)


@linux_only
def test_guard_sets_keepalive_and_user_timeout_from_the_timeout(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, _ = pair
    result = guard(client, timeout=3)
    assert result.complete, result.describe()
    assert client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert tcp_opt(client, socket.TCP_KEEPIDLE) == result.knobs.keepalive_idle == 1
    assert tcp_opt(client, socket.TCP_KEEPINTVL) == result.knobs.keepalive_interval == 1
    assert tcp_opt(client, socket.TCP_KEEPCNT) == result.knobs.keepalive_count == 3
    assert TCP_USER_TIMEOUT is not None
    # the lead time before the first RTO retransmission is taken off the user timeout
    assert 0.4 <= result.retransmit_lead < 0.5  # loopback: 2 x ~0 rtt + 200 ms + rto >= 200 ms
    assert tcp_opt(client, TCP_USER_TIMEOUT) == round((3 - result.retransmit_lead) * 1000)
    assert result.busy_bound == 3.0
    assert result.options == {
        "SO_KEEPALIVE": "set",
        "TCP_KEEPIDLE": "set",
        "TCP_KEEPINTVL": "set",
        "TCP_KEEPCNT": "set",
        "TCP_USER_TIMEOUT": "set",
    }


@linux_only
@pytest.mark.parametrize(("timeout", "idle_bound"), [(3, 3.0), (10, 10.0), (60, 60.0), (0.5, 2.0)])
def test_bounds_follow_the_kernels_rule(
    pair: tuple[socket.socket, socket.socket], timeout: float, idle_bound: float
) -> None:
    """Idle: the first keepalive firing, after at least one unanswered probe, at which
    nothing was heard for the user timeout (timers have a 1 s granularity)."""
    result = guard(pair[0], timeout=timeout)
    assert result.idle_bound == idle_bound
    assert result.busy_bound == timeout


@linux_only
def test_guard_leaves_nagle_alone_unless_asked(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    guard(client, timeout=5)
    assert tcp_opt(client, socket.TCP_NODELAY) == 0
    result = guard(server, timeout=5, nodelay=True)
    assert result.options["TCP_NODELAY"] == "set"
    assert tcp_opt(server, socket.TCP_NODELAY) == 1


@linux_only
def test_guard_takes_a_bare_descriptor_and_leaves_it_open(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = pair
    fd = client.fileno()
    result = guard(fd, timeout=4, probes=2)
    assert result.complete
    assert tcp_opt(client, socket.TCP_KEEPCNT) == 2
    client.sendall(b"still mine")
    assert server.recv(10) == b"still mine"


@linux_only
def test_guard_takes_any_object_with_fileno(pair: tuple[socket.socket, socket.socket]) -> None:
    class Wrapper:
        def __init__(self, sock: socket.socket) -> None:
            self._sock = sock

        def fileno(self) -> int:
            return self._sock.fileno()

    assert guard(Wrapper(pair[0]), timeout=5).complete


@linux_only
def test_accepted_sockets_inherit_a_guarded_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        guard(listener, timeout=7)
        with socket.create_connection(listener.getsockname(), timeout=5):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert TCP_USER_TIMEOUT is not None
                # no RTT sample on a listener: the kernel floors, 2 x 200 ms, are taken off
                assert tcp_opt(accepted, TCP_USER_TIMEOUT) == 6600


def test_guard_refuses_a_udp_socket() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        pytest.raises(ConfigError, match="TCP socket"),
    ):
        guard(udp, timeout=3)


def test_guard_refuses_a_unix_stream_socket() -> None:
    a, b = socket.socketpair()
    with a, b, pytest.raises(ConfigError, match="TCP socket"):
        guard(a, timeout=3)


def test_guard_refuses_a_descriptor_that_is_not_a_socket() -> None:
    fd = os.open(__file__, os.O_RDONLY)
    try:
        with pytest.raises(ConfigError, match="not a socket"):
            guard(fd, timeout=3)
    finally:
        os.close(fd)


def test_guard_refuses_a_closed_socket() -> None:
    sock = socket.socket()
    sock.close()
    with pytest.raises(ConfigError, match="closed"):
        guard(sock, timeout=3)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_guard_refuses_a_timeout_that_cannot_be_met(
    pair: tuple[socket.socket, socket.socket], timeout: float
) -> None:
    with pytest.raises(ConfigError):
        guard(pair[0], timeout=timeout)


@linux_only
def test_description_names_the_bounds(pair: tuple[socket.socket, socket.socket]) -> None:
    text = guard(pair[0], timeout=3).describe()
    assert "idle peer death noticed after 3 s" in text
    assert "unacknowledged data after 3 s" in text
    assert guard(pair[0], timeout=3).as_dict()["busy_bound"] == 3.0
