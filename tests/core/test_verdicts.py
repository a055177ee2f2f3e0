"""One place turns OS results and TCP_INFO evidence into causes."""

from __future__ import annotations

import dataclasses
import errno
import socket

import pytest

from peerwatch.core.verdicts import Cause, Verdict, classify_os_error, errno_name, hung_or_silent
from peerwatch.tcpinfo import tcp_info


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (ConnectionResetError(errno.ECONNRESET, "reset"), Cause.RESET),
        (BrokenPipeError(errno.EPIPE, "pipe"), Cause.RESET),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Cause.RESET),
        (TimeoutError(errno.ETIMEDOUT, "timed out"), Cause.TIMEOUT),
        (OSError(errno.EHOSTUNREACH, "no route"), Cause.UNREACHABLE),
        (OSError(errno.ENETUNREACH, "net"), Cause.UNREACHABLE),
        (BlockingIOError(errno.EAGAIN, "again"), None),
        (InterruptedError(errno.EINTR, "eintr"), None),
        (ConnectionResetError(), Cause.RESET),
    ],
)
def test_os_errors_map_to_causes(exc: OSError, cause: Cause | None) -> None:
    assert classify_os_error(exc) is cause


def test_errno_name() -> None:
    assert errno_name(ConnectionResetError(errno.ECONNRESET, "x")) == "ECONNRESET"
    assert errno_name(ValueError()) is None


def test_hung_versus_silent_from_real_tcp_info() -> None:
    """A fresh loopback connection: the kernel acks everything, so a mute app is HUNG."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        client = socket.create_connection(srv.getsockname())
        peer, _ = srv.accept()
        with client, peer:
            client.sendall(b"ping")
            peer.recv(4)
            info = tcp_info(client)
    if info is None:
        pytest.skip("TCP_INFO is Linux only")
    assert hung_or_silent(info, silent_for=5.0) is Cause.HUNG
    # the same snapshot as if our data sat unacknowledged and retransmitted: SILENT
    lost = dataclasses.replace(info, retransmits=4, backoff=4, unacked=2, last_ack_recv_ms=9000)
    assert hung_or_silent(lost, silent_for=5.0) is Cause.SILENT
    assert hung_or_silent(None, silent_for=5.0) is Cause.SILENT


def test_verdict_describes_itself() -> None:
    v = Verdict(Cause.RESET, "connection lost", 1.0, 0.5, errno="ECONNRESET", undelivered=(b"a",))
    assert v.describe() == "RESET: connection lost [ECONNRESET]; 1 message(s) not acknowledged"
    assert v.as_dict()["cause"] == "RESET" and v.peer_dead


def test_nothing_outstanding_is_not_evidence_of_a_hung_peer() -> None:
    """No ACK during the silence (we sent nothing in it): we cannot claim the kernel lives."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        client = socket.create_connection(srv.getsockname())
        peer, _ = srv.accept()
        with client, peer:
            info = tcp_info(client)
    if info is None:
        pytest.skip("TCP_INFO is Linux only")
    quiet = dataclasses.replace(info, unacked=0, retransmits=0, last_ack_recv_ms=8000)
    assert hung_or_silent(quiet, silent_for=5.0) is Cause.SILENT
