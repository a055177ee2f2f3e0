"""A deferred TCP_INFO snapshot (``deferred_tcp_info``, what every verdict takes) is the
parsed one in every way a reader can tell, and holds the moment it was taken, not the
moment it is first read."""

from __future__ import annotations

import pickle
import socket
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerwatch.kernel.tcpinfo import (
    _LAYOUT,
    MIN_TCP_INFO_LEN,
    TCP_INFO_BUFLEN,
    TCP_INFO_OPT,
    TcpState,
    deferred_tcp_info,
    own_socket_tcp_info,
    parse_tcp_info,
)

FULL = _LAYOUT[-1][2] + 4
BUFFERS = st.integers(MIN_TCP_INFO_LEN, FULL + 16).flatmap(
    lambda n: st.binary(min_size=n, max_size=n)
)


@given(BUFFERS)
def test_a_deferred_snapshot_reads_as_the_parsed_one(raw: bytes) -> None:
    parsed = parse_tcp_info(raw)
    for name, _, _ in _LAYOUT:  # each field first, from a fresh snapshot: any one decodes all
        assert getattr(deferred_tcp_info(raw), name) == getattr(parsed, name), name
    deferred = deferred_tcp_info(raw)
    assert deferred == parsed
    assert hash(deferred) == hash(parsed)
    assert repr(deferred_tcp_info(raw)) == repr(parsed)
    assert deferred_tcp_info(raw).as_dict() == parsed.as_dict()
    assert deferred_tcp_info(raw).ssthresh == parsed.ssthresh


@given(BUFFERS)
def test_a_deferred_snapshot_survives_pickling_before_its_first_read(raw: bytes) -> None:
    copy = pickle.loads(pickle.dumps(deferred_tcp_info(raw)))
    assert copy == parse_tcp_info(raw)


def test_a_short_buffer_is_refused_at_once_as_the_parser_refuses_it() -> None:
    with pytest.raises(ValueError, match="too short"):
        deferred_tcp_info(b"\x01" * (MIN_TCP_INFO_LEN - 1))


def test_a_name_that_is_no_field_is_an_attribute_error() -> None:
    info = deferred_tcp_info(bytes(FULL))
    with pytest.raises(AttributeError, match="rtt_uss"):
        info.rtt_uss  # type: ignore[attr-defined]  # noqa: B018
    assert info.rtt_us == 0  # decoded by the failed read, and still whole


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux")
def test_a_snapshot_read_later_tells_the_moment_it_was_taken() -> None:
    """Taken while ESTABLISHED, read after the peer closed: ESTABLISHED, with the bytes
    counted then; a snapshot taken after the close says CLOSE_WAIT."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        with server:
            client.sendall(b"x" * 1000)
            assert server.recv(4096)
            before = own_socket_tcp_info(server)
            client.sendall(b"y" * 500)
            client.close()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                raw = server.getsockopt(socket.IPPROTO_TCP, TCP_INFO_OPT, TCP_INFO_BUFLEN)
                if parse_tcp_info(raw).state is TcpState.CLOSE_WAIT:
                    break
                time.sleep(0.01)
            after = own_socket_tcp_info(server)
            assert before is not None and after is not None
            assert before.state is TcpState.ESTABLISHED  # first read now, after the close
            assert after.state is TcpState.CLOSE_WAIT
            if before.bytes_received is not None and after.bytes_received is not None:
                assert after.bytes_received - before.bytes_received >= 500
