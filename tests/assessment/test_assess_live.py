"""assess() on live loopback sockets that the kernel put into each state (no figures made up)."""

from __future__ import annotations

import socket
import sys

import pytest

from bad_states import close_wait_pair, pair, reset_pair, zero_window_pair
from peerwatch.assessment.live import assess, socket_facts
from peerwatch.assessment.model import AssessPolicy, Finding, Status
from peerwatch.errors import ConfigError
from peerwatch.kernel.guarding import guard
from peerwatch.kernel.tcpinfo import TcpState

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux")


def test_a_guarded_healthy_connection_is_alive() -> None:
    client, server = pair()
    with client, server:
        guard(client, timeout=5)
        verdict = assess(client)
        assert (verdict.status, verdict.cause) == (Status.ALIVE, Finding.OK)
        assert any(e.startswith("keepalive on: idle") for e in verdict.evidence)
        assert any(e.startswith("user timeout") for e in verdict.evidence)


def test_an_unguarded_connection_says_a_dead_peer_would_go_unnoticed() -> None:
    client, server = pair()
    with client, server:
        verdict = assess(client.fileno())  # a bare descriptor works too
        assert (verdict.status, verdict.cause) == (Status.ALIVE, Finding.UNGUARDED)
        assert "keepalive off" in verdict.evidence


def test_close_wait_kept_open_is_suspect_then_dead_by_policy() -> None:
    client, _ = close_wait_pair()
    with client:
        verdict = assess(client)
        assert (verdict.status, verdict.cause) == (Status.SUSPECT, Finding.PEER_CLOSED)
        assert "CLOSE_WAIT" in verdict.detail
        strict = assess(client, AssessPolicy(close_wait_after=0))
        assert (strict.status, strict.cause) == (Status.DEAD, Finding.PEER_CLOSED)
        assert "a write would be answered with RST" in strict.detail


def test_a_reset_connection_still_held_is_dead() -> None:
    client, _ = reset_pair()
    with client:
        verdict = assess(client)
        assert (verdict.status, verdict.cause) == (Status.DEAD, Finding.CLOSED)
        # read-only: the pending ECONNRESET is still there for the owner to receive
        with pytest.raises(ConnectionResetError):
            client.recv(1)


def test_zero_window_blames_the_peer_on_one_side_and_the_reader_on_the_other() -> None:
    client, server = zero_window_pair()
    with client, server:
        writer = assess(client)
        assert (writer.status, writer.cause) == (Status.SUSPECT, Finding.PEER_NOT_READING)
        assert "window is zero" in writer.detail
        reader = assess(server)
        assert (reader.status, reader.cause) == (Status.SUSPECT, Finding.LOCAL_NOT_READING)
        assert "bytes wait in its receive queue" in reader.detail


def test_socket_facts_reads_queues_and_options() -> None:
    client, server = pair()
    with client, server:
        client.sendall(b"12345")
        guard(server, timeout=4)
        facts = socket_facts(server.fileno())
        assert facts.state is TcpState.ESTABLISHED
        assert facts.recv_queue == 5
        assert facts.keepalive is True
        assert facts.keepalive_idle == 1
        assert facts.user_timeout_ms is not None and facts.user_timeout_ms > 0


def test_a_closed_socket_object_is_dead() -> None:
    client, server = pair()
    server.close()
    client.close()
    verdict = assess(client)
    assert (verdict.status, verdict.cause) == (Status.DEAD, Finding.CLOSED)


def test_assess_refuses_what_is_not_a_tcp_socket() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp, pytest.raises(ConfigError, match="TCP socket"):
        assess(udp)


def test_keepalive_left_at_two_hours_is_reported_as_slow() -> None:
    client, server = pair()
    with client, server:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 7200)  # the kernel defaults
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 75)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 9)
        verdict = assess(client)
        assert (verdict.status, verdict.cause) == (Status.ALIVE, Finding.SLOW_KEEPALIVE)
        assert "noticed only after about 2 h" in verdict.detail
