"""One place turns OS results and TCP_INFO evidence into causes."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest

from peerwatch.core.verdicts import (
    Cause,
    Verdict,
    classify_os_error,
    connect_failure,
    errno_name,
    explain_os_error,
    hung_or_silent,
)
from peerwatch.kernel.tcpinfo import TcpInfo, tcp_info


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


def loopback_info(data: bytes = b"") -> TcpInfo:
    """TCP_INFO of a fresh loopback client after the peer read ``data`` (if any) from it."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        client = socket.create_connection(srv.getsockname())
        peer, _ = srv.accept()
        with client, peer:
            if data:
                client.sendall(data)
                peer.recv(len(data))
            info = tcp_info(client)
    if info is None:
        pytest.skip("TCP_INFO is Linux only")
    return info


def test_hung_versus_silent_from_real_tcp_info() -> None:
    """A fresh loopback connection: the kernel acks everything, so a mute app is HUNG."""
    info = loopback_info(b"ping")
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
    info = loopback_info()
    quiet = dataclasses.replace(info, unacked=0, retransmits=0, last_ack_recv_ms=8000)
    assert hung_or_silent(quiet, silent_for=5.0) is Cause.SILENT


def test_an_ack_at_the_start_of_the_silence_counts_despite_jiffy_rounding() -> None:
    """A HELLO sent as the silence began was acked then; the kernel ages that ACK in jiffies."""
    info = loopback_info(b"hello")
    # measured under load: silence 505 ms by the loop's clock, the ACK 508 ms old by the kernel's
    at_start = dataclasses.replace(info, last_ack_recv_ms=508, last_data_sent_ms=508)
    assert hung_or_silent(at_start, silent_for=0.505) is Cause.HUNG
    # an ACK more than a tick older than the silence is no evidence
    before = dataclasses.replace(info, last_ack_recv_ms=600, last_data_sent_ms=600)
    assert hung_or_silent(before, silent_for=0.505) is Cause.SILENT


def test_codes_that_are_not_errnos_are_not_read_as_errnos() -> None:
    """getaddrinfo and OpenSSL codes collide with errno numbers (SSL error 1 is not EPERM)."""
    unresolved = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert classify_os_error(unresolved) is Cause.UNREACHABLE
    assert errno_name(unresolved) is None
    assert explain_os_error(unresolved) == "name resolution failed: Name or service not known"
    rejected = ssl.SSLCertVerificationError(1, "certificate verify failed")
    rejected.verify_message = "self-signed certificate"
    assert classify_os_error(rejected) is Cause.PROTOCOL
    assert errno_name(rejected) is None
    assert explain_os_error(rejected) == (
        "TLS certificate verification failed: self-signed certificate"
    )
    broken = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    assert classify_os_error(broken) is Cause.PROTOCOL and errno_name(broken) is None
    assert explain_os_error(broken).startswith("TLS handshake or record failed")
    assert classify_os_error(ssl.SSLEOFError(8, "EOF in violation of protocol")) is Cause.EOF


@pytest.mark.parametrize(
    ("exc", "during_tls", "cause", "phrase"),
    [
        (None, False, Cause.UNREACHABLE, "no address"),
        (UnicodeError("label empty or too long"), False, Cause.UNREACHABLE, "not a valid host"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), False, Cause.RESET, "refused"),
        (ConnectionResetError(), True, Cause.PROTOCOL, "the TLS handshake failed: the peer reset"),
        (ssl.SSLError(1, "alert"), True, Cause.PROTOCOL, "TLS handshake or record failed"),
    ],
)
def test_connect_failures_have_one_translation(
    exc: BaseException | None, during_tls: bool, cause: Cause, phrase: str
) -> None:
    got, why = connect_failure(exc, during_tls=during_tls)
    assert got is cause
    assert phrase in why


def _snapshot() -> TcpInfo:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        client = socket.create_connection(srv.getsockname())
        peer, _ = srv.accept()
        with client, peer:
            info = tcp_info(client)
    if info is None:
        pytest.skip("TCP_INFO is Linux only")
    return info


@pytest.mark.parametrize(
    ("probes", "backoff", "unacked", "retransmits", "last_ack_ms", "cause"),
    [
        (0, 3, 0, 0, 400, Cause.HUNG),  # window probes answered: nothing unacked, ACK recent
        (1, 4, 0, 0, 30, Cause.HUNG),  # loopback: the answer came before the probe was counted
        (3, 5, 0, 0, 400, Cause.SILENT),  # probes unanswered
        (0, 3, 0, 0, 9000, Cause.SILENT),  # no ACK during the silence
        (0, 0, 0, 0, 5004, Cause.HUNG),  # an ACK at the silence's start, a jiffy of rounding
        (0, 0, 0, 0, 5020, Cause.SILENT),  # an ACK from before the silence
        (0, 3, 2, 3, 400, Cause.SILENT),  # data unacknowledged and retransmitted
        (0, 2, 1, 0, 400, Cause.SILENT),  # backoff with bytes unacknowledged: not window probes
    ],
)
def test_answered_window_probes_are_kernel_evidence(
    probes: int, backoff: int, unacked: int, retransmits: int, last_ack_ms: int, cause: Cause
) -> None:
    info = dataclasses.replace(
        _snapshot(),
        probes=probes,
        backoff=backoff,
        unacked=unacked,
        retransmits=retransmits,
        last_ack_recv_ms=last_ack_ms,
        notsent_bytes=3_000_000,
    )
    assert hung_or_silent(info, silent_for=5.0) is cause


def test_a_stopped_receiver_with_data_in_flight_is_hung_from_the_kernels_own_numbers() -> None:
    """Loopback, receiver SIGSTOPped, sender fills its window: zero-window probes answered."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        receiver = subprocess.Popen(
            [sys.executable, "-c",
             "import socket, sys, time\n"
             f"s = socket.create_connection(('127.0.0.1', {srv.getsockname()[1]}))\n"
             "print('up', flush=True)\n"
             "time.sleep(60)\n"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert receiver.stdout is not None and receiver.stdout.readline() == "up\n"
            sender, _ = srv.accept()
            with sender:
                os.kill(receiver.pid, signal.SIGSTOP)
                stopped = time.monotonic()
                sender.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    for _ in range(1000):  # until our send buffer is full too
                        sender.send(b"x" * 65536)
                time.sleep(1.5)  # a few window probes (200 ms, then doubling)
                info = tcp_info(sender)
                silent_for = time.monotonic() - stopped
        finally:
            receiver.kill()
            receiver.wait(10)
            if receiver.stdout is not None:
                receiver.stdout.close()
    if info is None:
        pytest.skip("TCP_INFO is Linux only")
    assert info.backoff > 0 and info.unacked == 0 and info.retransmits == 0
    assert info.notsent_bytes is None or info.notsent_bytes > 0
    assert hung_or_silent(info, silent_for) is Cause.HUNG
