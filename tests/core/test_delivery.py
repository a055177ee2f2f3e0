"""Delivery books: cumulative ACKs, exact undelivered sets, consecutive sequences."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerwatch.core.delivery import Inbound, Outbound
from peerwatch.core.frames import Data
from peerwatch.errors import RemoteProtocolError


def test_ack_releases_a_prefix_and_undelivered_is_the_rest() -> None:
    out = Outbound()
    seqs = [out.assign(bytes([i])) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    out.sent_through = 5
    assert out.on_ack(3) == 3
    assert out.undelivered() == (b"\x03", b"\x04")
    assert out.in_flight == 2
    assert out.on_ack(3) == 0  # a repeated ACK is harmless


def test_ack_for_a_message_never_sent_is_a_protocol_error() -> None:
    out = Outbound()
    out.assign(b"a")
    out.assign(b"b")
    out.sent_through = 1  # b is still in our outbox
    with pytest.raises(RemoteProtocolError, match="ACK for sequence 2, but only 1 were ever sent"):
        out.on_ack(2)


def test_ack_going_backwards_is_a_protocol_error() -> None:
    out = Outbound()
    for _ in range(3):
        out.assign(b"x")
    out.sent_through = 3
    out.on_ack(2)
    with pytest.raises(RemoteProtocolError, match="went backwards"):
        out.on_ack(1)


@given(st.lists(st.binary(max_size=8), max_size=30), st.data())
def test_undelivered_is_exactly_what_was_not_acknowledged(
    messages: list[bytes], data: st.DataObject
) -> None:
    out = Outbound()
    for m in messages:
        out.assign(m)
    out.sent_through = len(messages)
    acked = 0
    for _ in range(data.draw(st.integers(0, 5))):
        acked = data.draw(st.integers(acked, len(messages)))
        out.on_ack(acked)
    assert out.undelivered() == tuple(messages[acked:])


def test_inbound_reassembles_chunks_and_counts_messages() -> None:
    inbound = Inbound(max_message=100)
    assert inbound.on_data(Data(1, True, b"ab")) is None
    assert inbound.on_data(Data(1, False, b"cd")) == b"abcd"
    assert inbound.on_data(Data(2, False, b"e")) == b"e"
    assert inbound.received_through == 2


def test_inbound_rejects_a_gap_in_sequences() -> None:
    inbound = Inbound(max_message=100)
    inbound.on_data(Data(1, False, b""))
    with pytest.raises(RemoteProtocolError, match="sequence 3, expected 2"):
        inbound.on_data(Data(3, False, b""))


def test_inbound_bounds_a_reassembled_message() -> None:
    inbound = Inbound(max_message=10)
    inbound.on_data(Data(1, True, b"x" * 6))
    with pytest.raises(RemoteProtocolError, match="exceeds max_message"):
        inbound.on_data(Data(1, True, b"x" * 6))
