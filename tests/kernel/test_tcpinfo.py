"""TCP_INFO parsing: truncated buffers of real kernel sizes, and values from real sockets.

The kernel only ever appends to ``struct tcp_info`` and returns as many bytes as
it knows, so a buffer from an old kernel is a prefix of a new one. We take a
real buffer from this kernel and cut it at the sizes historical kernels return.
"""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from peerwatch.kernel.tcpinfo import (
    MIN_TCP_INFO_LEN,
    TCP_INFO_BUFLEN,
    TCP_INFO_OPT,
    TcpInfo,
    TcpState,
    parse_tcp_info,
    tcp_info,
    tcp_rtt_us,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux")

# size returned by a kernel -> the last field that kernel knows (include/uapi/linux/tcp.h history)
KERNEL_SIZES: dict[int, str] = {
    104: "total_retrans",  # 2.6 .. 3.14
    120: "max_pacing_rate",  # 3.15
    136: "bytes_received",  # 4.1
    144: "segs_in",  # 4.2
    160: "data_segs_out",  # 4.6
    168: "delivery_rate",  # 4.9
    192: "sndbuf_limited_us",  # 4.10
    200: "delivered_ce",  # 4.18
    216: "bytes_retrans",  # 4.19
    224: "reord_seen",  # 4.19
    228: "rcv_ooopack",  # 5.4
    232: "snd_wnd",  # 5.4
    240: "rehash",  # 6.2
}
FIELD_ORDER = [f for f in TcpInfo.__dataclass_fields__]


def raw_info(sock: socket.socket) -> bytes:
    return sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO_OPT, TCP_INFO_BUFLEN)


def test_this_kernel_returns_at_least_every_field_we_parse(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    raw = raw_info(pair[0])
    assert len(raw) >= 240, f"kernel returned {len(raw)} bytes"
    info = parse_tcp_info(raw)
    assert all(getattr(info, name) is not None for name in FIELD_ORDER)


@pytest.mark.parametrize(("size", "last_field"), sorted(KERNEL_SIZES.items()))
def test_truncated_buffer_parses_exactly_the_fields_that_kernel_had(
    pair: tuple[socket.socket, socket.socket], size: int, last_field: str
) -> None:
    full = parse_tcp_info(raw_info(pair[0]))
    info = parse_tcp_info(raw_info(pair[0])[:size])
    known = FIELD_ORDER[: FIELD_ORDER.index(last_field) + 1]
    for name in known:
        assert getattr(info, name) is not None, name
    for name in FIELD_ORDER[len(known) :]:
        assert getattr(info, name) is None, f"{name} invented from a {size}-byte buffer"
    # the old fields mean the same thing whatever the buffer length
    assert info.state is full.state is TcpState.ESTABLISHED
    assert info.snd_mss == full.snd_mss
    assert info.total_retrans == full.total_retrans


def test_a_buffer_cut_inside_a_field_leaves_that_field_none(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    info = parse_tcp_info(raw_info(pair[0])[:110])  # pacing_rate is bytes 104..112
    assert info.total_retrans is not None
    assert info.pacing_rate is None


def test_a_longer_buffer_from_a_future_kernel_is_accepted() -> None:
    raw = bytearray(400)
    raw[0] = TcpState.ESTABLISHED
    info = parse_tcp_info(bytes(raw))
    assert info.rehash == 0


@pytest.mark.parametrize("size", [0, 8, 103])
def test_a_buffer_shorter_than_any_kernel_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="too short"):
        parse_tcp_info(bytes(size))


def test_unknown_state_numbers_become_unknown() -> None:
    raw = bytearray(MIN_TCP_INFO_LEN)
    raw[0] = 200
    assert parse_tcp_info(bytes(raw)).state is TcpState.UNKNOWN


def test_wscale_nibbles_split_send_and_receive() -> None:
    raw = bytearray(MIN_TCP_INFO_LEN)
    raw[6] = 0x7A  # receive scale 7 in the high nibble, send scale 10 in the low one
    info = parse_tcp_info(bytes(raw))
    assert (info.snd_wscale, info.rcv_wscale) == (10, 7)


def test_real_socket_counts_bytes_both_ways(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    client.sendall(b"x" * 5000)
    got = 0
    while got < 5000:
        got += len(server.recv(65536))
    server.sendall(b"y" * 300)
    assert client.recv(300, socket.MSG_WAITALL) == b"y" * 300
    deadline = time.monotonic() + 5
    info = tcp_info(client)
    while info is not None and info.bytes_acked != 5001 and time.monotonic() < deadline:
        time.sleep(0.01)  # the ACK for the last segment may still be on its way
        info = tcp_info(client)
    assert info is not None
    # bytes_acked counts the SYN as one byte (RFC 4898 tcpEStatsAppHCThruOctetsAcked + 1)
    assert info.bytes_acked == 5001
    assert info.bytes_received == 300
    assert info.unacked == 0
    assert info.state is TcpState.ESTABLISHED
    assert info.rtt_us > 0
    assert info.snd_mss > 0
    assert info.snd_wnd is not None and info.snd_wnd > 0
    server_info = tcp_info(server.fileno())  # a bare descriptor works too
    assert server_info is not None
    assert server_info.bytes_received == 5000


def test_real_socket_state_follows_the_peer_closing(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = pair
    server.close()
    deadline = time.monotonic() + 5
    info = tcp_info(client)
    while info is not None and info.state is TcpState.ESTABLISHED and time.monotonic() < deadline:
        time.sleep(0.01)
        info = tcp_info(client)
    assert info is not None
    assert info.state is TcpState.CLOSE_WAIT
    assert client.recv(10) == b""


def test_idle_times_grow_with_idleness(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    client.sendall(b"ping")
    server.recv(4)
    time.sleep(0.3)
    info = tcp_info(client)
    assert info is not None
    assert info.last_data_sent_ms >= 250
    assert info.last_ack_recv_ms >= 250


def test_tcp_info_of_a_non_tcp_socket_is_none() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert tcp_info(udp) is None


def test_tcp_info_leaves_the_callers_descriptor_open(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, _ = pair
    fd = client.fileno()
    for _ in range(3):
        assert tcp_info(fd) is not None
    assert client.fileno() == fd
    client.sendall(b"still usable")


def test_tcp_info_of_a_closed_socket_object_is_none() -> None:
    sock = socket.socket()
    sock.close()
    assert tcp_info(sock) is None


def test_tcp_info_of_a_descriptor_that_is_not_a_socket_is_none() -> None:
    fd = os.open(__file__, os.O_RDONLY)
    try:
        assert tcp_info(fd) is None
    finally:
        os.close(fd)


def test_the_short_rtt_read_agrees_with_the_full_snapshot(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Metrics read ``tcpi_rtt`` alone; it must be the field the full layout calls rtt_us."""
    client, server = pair
    for _ in range(3):  # a few round trips give the kernel an RTT sample
        client.sendall(b"ping")
        assert server.recv(4) == b"ping"
        server.sendall(b"pong")
        assert client.recv(4) == b"pong"
    info = tcp_info(client)
    assert info is not None and info.rtt_us > 0
    # no traffic between the two reads, so the kernel's estimate cannot have moved
    assert tcp_rtt_us(client) == info.rtt_us


def test_the_short_rtt_read_of_a_non_tcp_socket_is_none() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert tcp_rtt_us(udp) is None
