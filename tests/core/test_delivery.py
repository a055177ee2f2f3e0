"""Delivery books: cumulative ACKs, exact undelivered sets, consecutive sequences."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerwatch.core.delivery import Inbound, Outbound
from peerwatch.core.frames import MIN_CHUNK, Data, max_parts
from peerwatch.errors import MessageTooBig, RemoteProtocolError


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
    inbound = Inbound(max_message=10_000)
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
    inbound = Inbound(max_message=10_000)
    inbound.on_data(Data(1, True, b"x" * 6000))
    with pytest.raises(MessageTooBig, match="exceeds max_message"):
        inbound.on_data(Data(1, True, b"x" * 6000))


def test_a_whole_message_over_max_message_is_too_big() -> None:
    with pytest.raises(MessageTooBig, match=r"message 1 exceeds max_message \(10 bytes\)"):
        Inbound(max_message=10).on_data(Data(1, False, b"x" * 11))


def test_an_empty_chunk_with_more_set_is_refused() -> None:
    inbound = Inbound(max_message=1 << 20)
    inbound.on_data(Data(1, True, b"x" * MIN_CHUNK))
    with pytest.raises(RemoteProtocolError, match="empty chunk with MORE set in message 1"):
        inbound.on_data(Data(1, True, b""))


def test_an_empty_first_chunk_is_refused_too() -> None:
    with pytest.raises(RemoteProtocolError, match="empty chunk"):
        Inbound(max_message=1 << 20).on_data(Data(1, True, b""))


def test_an_empty_final_chunk_ends_a_message() -> None:
    inbound = Inbound(max_message=1 << 20)
    inbound.on_data(Data(1, True, b"x" * MIN_CHUNK))
    assert inbound.on_data(Data(1, False, b"")) == b"x" * MIN_CHUNK


def test_an_honest_sender_at_the_smallest_chunk_fits_the_part_bound() -> None:
    """The largest message cut at MIN_CHUNK arrives whole: the bound refuses no honest peer."""
    max_message = 100_000
    inbound = Inbound(max_message)
    message = bytes(range(256)) * (max_message // 256) + b"tail"
    chunks = [message[i : i + MIN_CHUNK] for i in range(0, len(message), MIN_CHUNK)]
    assert len(chunks) <= max_parts(max_message)
    for chunk in chunks[:-1]:
        assert inbound.on_data(Data(1, True, chunk)) is None
    assert inbound.on_data(Data(1, False, chunks[-1])) == message


def test_two_byte_chunks_are_refused_within_bounded_memory() -> None:
    """A peer cutting 1 MiB into 2-byte chunks cost 29 x max_message; now a bounded prefix."""
    max_message = 1 << 20
    inbound = Inbound(max_message)
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError, match="cut into more than 2049 chunks"):
            for _ in range(max_message // 2):
                inbound.on_data(Data(1, True, b"ab"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert inbound.partial <= 2 * max_parts(max_message)
    assert peak < 64 * 1024  # the old list of parts peaked above 29 MiB here


def test_reassembly_costs_about_the_message_itself() -> None:
    """Assembled in one buffer: a 4 MiB message in 512-byte chunks peaks under 2.5 x its size."""
    max_message = 4 << 20
    inbound = Inbound(max_message)
    chunk = b"z" * MIN_CHUNK
    tracemalloc.start()
    try:
        for _ in range(max_message // MIN_CHUNK - 1):
            inbound.on_data(Data(1, True, chunk))
        message = inbound.on_data(Data(1, False, chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message is not None and len(message) == max_message
    assert peak < 2.5 * max_message


@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 3000)), max_size=60),
    st.integers(1, 20_000),
)
def test_any_chunk_stream_yields_bounded_messages_or_a_protocol_error(
    chunks: list[tuple[bool, int]], max_message: int
) -> None:
    """Whatever the peer cuts, a message never exceeds max_message, nor its parts the bound."""
    inbound = Inbound(max_message)
    parts = 0
    try:
        for more, size in chunks:
            message = inbound.on_data(Data(inbound.expected_seq, more, b"p" * size))
            parts += 1
            assert inbound.partial <= max_message
            assert parts <= max_parts(max_message)
            if message is not None:
                assert len(message) <= max_message
                parts = 0
    except RemoteProtocolError as exc:
        assert str(exc)
