"""The netlink sock_diag reader against sockets whose every figure the test knows."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from bad_states import close_wait_pair, pair, private_loopback
from peerwatch.assessment.live import assess
from peerwatch.assessment.model import Finding, Status, Timer
from peerwatch.diag.owners import socket_owners
from peerwatch.diag.sockdiag import SockRecord, read_sockets
from peerwatch.kernel.guarding import guard
from peerwatch.kernel.tcpinfo import TcpState

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sock_diag is Linux")


def record_of(sock: socket.socket, states: set[TcpState] | None = None) -> SockRecord:
    inode = os.fstat(sock.fileno()).st_ino
    matches = [r for r in read_sockets(states) if r.inode == inode]
    assert len(matches) == 1
    return matches[0]


def test_a_connection_as_the_kernel_reports_it() -> None:
    addr = private_loopback()
    client, server = pair(host=addr)
    with client, server:
        client.sendall(b"12345")
        guard(server, timeout=5)
        record = record_of(server)
        assert record.state is TcpState.ESTABLISHED
        assert record.local == (addr, server.getsockname()[1])
        assert record.remote == client.getsockname()
        assert record.local_text == f"{addr}:{server.getsockname()[1]}"
        assert record.recv_queue == 5 and record.send_queue == 0
        assert record.uid == os.geteuid()
        assert record.timer is Timer.KEEPALIVE  # guard() turned keepalive on
        assert 0 < record.timer_expires_ms <= 2000  # idle 2 s for a 5 s bound
        assert record.info is not None
        assert record.info.state is TcpState.ESTABLISHED
        assert record.info.bytes_received == 5
        assert record.congestion  # the congestion control in use, e.g. "cubic"
        assert record.facts().recv_queue == 5


def test_ipv6_addresses_are_bracketed() -> None:
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback")
    with listener:
        client = socket.create_connection(listener.getsockname()[:2], timeout=5)
        accepted, _ = listener.accept()
        with client, accepted:
            record = record_of(client)
            assert record.family == socket.AF_INET6
            assert record.remote_text == f"[::1]:{listener.getsockname()[1]}"


def test_states_are_filtered_in_the_kernel() -> None:
    client, _ = close_wait_pair()
    with client:
        inode = os.fstat(client.fileno()).st_ino
        assert any(r.inode == inode for r in read_sockets({TcpState.CLOSE_WAIT}))
        assert not any(r.inode == inode for r in read_sockets({TcpState.ESTABLISHED}))
        assert record_of(client).shutdown == 1  # the peer's side is shut (its FIN)


def test_a_listener_reports_its_backlog_and_accept_queue() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(7)
        with socket.create_connection(listener.getsockname(), timeout=5):
            record = record_of(listener, {TcpState.LISTEN})
            assert record.state is TcpState.LISTEN
            assert (record.recv_queue, record.send_queue) == (1, 7)  # waiting, backlog


def test_owners_map_inodes_to_this_process() -> None:
    client, server = pair()
    with client, server:
        owners = socket_owners()[os.fstat(client.fileno()).st_ino]
        assert [o.pid for o in owners] == [os.getpid()]
        assert str(owners[0]) == f"{owners[0].command}[{os.getpid()}]"


def test_assess_takes_a_sock_diag_record_and_agrees_with_the_live_socket() -> None:
    client, _ = close_wait_pair()
    with client:
        from_record, from_socket = assess(record_of(client)), assess(client)
        assert (from_record.status, from_record.cause) == (Status.SUSPECT, Finding.PEER_CLOSED)
        assert (from_socket.status, from_socket.cause) == (Status.SUSPECT, Finding.PEER_CLOSED)
        assert "timer off" in from_record.evidence  # what only sock_diag knows
        assert "keepalive off" in from_socket.evidence  # what only the socket tells
