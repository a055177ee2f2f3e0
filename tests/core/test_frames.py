"""The wire codec: every frame round-trips, in any split, and bad input names its fault."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.core.decoder import Decoder
from peerwatch.core.frames import (
    HEADER,
    MAX_REASON,
    MIN_MAX_FRAME,
    PROTOCOL_VERSION,
    Ack,
    Data,
    Goodbye,
    GoodbyeCode,
    Hello,
    Kind,
    Ping,
    Pong,
    chunk_message,
    encode,
    encode_data,
    encode_goodbye,
)
from peerwatch.errors import RemoteProtocolError

HELLO = Hello(PROTOCOL_VERSION, 0x0123456789ABCDEF, 0.5, 2.0, 1 << 20, 16 << 20)
SAMPLES = [
    HELLO,
    Data(1, False, b"hello"),
    Data(2, True, b""),
    Data(2**64 - 1, False, bytes(range(256))),
    Ack(7),
    Ping(3, 123456789),
    Pong(3, 123456789),
    Goodbye(GoodbyeCode.GOING_AWAY, "restart"),
    Goodbye(999, "a code from a newer peer"),
]


def test_integers_are_big_endian() -> None:
    raw = encode(Ack(0x0102030405060708))
    assert raw == struct.pack(">IB", 8, Kind.ACK) + bytes([1, 2, 3, 4, 5, 6, 7, 8])


@pytest.mark.parametrize("frame", SAMPLES, ids=lambda f: type(f).__name__)
def test_round_trip(frame: object) -> None:
    assert Decoder(1 << 20).feed(encode(frame)) == [frame]  # type: ignore[arg-type]


def test_stream_fed_one_byte_at_a_time() -> None:
    stream = b"".join(encode(f) for f in SAMPLES)
    decoder = Decoder(1 << 20)
    out = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
    assert out == SAMPLES
    assert len(decoder.partial) == 0


@given(st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_split_gives_the_same_frames(cuts: list[int]) -> None:
    stream = b"".join(encode(f) for f in SAMPLES)
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    decoder = Decoder(1 << 20)
    out = []
    for piece in pieces:
        out += decoder.feed(piece)
    assert out == SAMPLES


def test_chunked_message_reassembles_in_order() -> None:
    payload = bytes(range(256)) * 40
    frames = Decoder(1 << 20).feed(b"".join(chunk_message(5, payload, 1000)))
    assert all(isinstance(f, Data) and f.seq == 5 for f in frames)
    assert [f.more for f in frames] == [True] * 10 + [False]  # type: ignore[union-attr]
    assert b"".join(f.payload for f in frames) == payload  # type: ignore[union-attr]


@pytest.mark.parametrize("size", [1, 999, 1000, 1001, 2000, 2001])
def test_the_chunker_cuts_at_the_chunk_size_with_no_empty_part(size: int) -> None:
    payload = bytes(range(256)) * 8
    payload = (payload * (size // len(payload) + 1))[:size]
    frames = Decoder(1 << 20).feed(b"".join(chunk_message(1, payload, 1000)))
    assert len(frames) == -(-size // 1000)
    assert all(f.payload for f in frames)  # type: ignore[union-attr]
    assert [f.more for f in frames][-1] is False  # type: ignore[union-attr]
    assert b"".join(f.payload for f in frames) == payload  # type: ignore[union-attr]


def test_goodbye_reason_is_bounded() -> None:
    frame = Decoder(1 << 20).feed(encode_goodbye(GoodbyeCode.NORMAL, "x" * 5000))[0]
    assert isinstance(frame, Goodbye) and len(frame.reason) == 1024


def _hello_with(**fields: int) -> bytes:
    values = {
        "magic": b"PW",
        "version": PROTOCOL_VERSION,
        "flags": 0,
        "inc": 1,
        "interval": 500,
        "timeout": 2000,
        "max_frame": 1 << 20,
        "max_message": 1 << 24,
    }
    values.update(fields)  # type: ignore[arg-type]
    body = struct.pack("!2sBBQIIII", *values.values())
    return HEADER.pack(len(body), Kind.HELLO) + body


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_hello_with(version=9), "unknown protocol version 9"),
        (_hello_with(magic=b"HT"), "bad HELLO magic"),  # type: ignore[arg-type]
        (_hello_with(timeout=400), "impossible liveness settings"),
        (_hello_with(max_frame=10), "max_frame 10"),
        (_hello_with(max_frame=64), "max_frame 64, below the floor of 4096 bytes"),
        (_hello_with(max_message=0), "max_message 0: no message could ever be sent"),
        (HEADER.pack(0, 42), "unknown frame kind 42"),
        (HEADER.pack(2_000_000, Kind.DATA), "exceeds max_frame"),
        (HEADER.pack(3, Kind.DATA) + b"abc", "too short"),
        (HEADER.pack(9, Kind.DATA) + bytes(8) + b"\x80", "unknown flags"),
        (HEADER.pack(4, Kind.ACK) + bytes(4), "ACK frame body must be 8 bytes"),
        (HEADER.pack(1, Kind.GOODBYE) + b"\x00", "GOODBYE frame body of 1 bytes"),
    ],
)
def test_bad_input_names_the_fault(raw: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        Decoder(1 << 20).feed(raw)


def test_oversized_frame_is_refused_before_its_body_is_buffered() -> None:
    decoder = Decoder(1000)
    with pytest.raises(RemoteProtocolError, match="exceeds max_frame"):
        decoder.feed(HEADER.pack(1001, Kind.DATA))
    assert len(decoder.partial) < 1000


# --- fuzzing: only RemoteProtocolError escapes, memory stays within max_frame ---------

MAX_FRAME = 4096
valid_frames = st.one_of(
    st.builds(Data, st.integers(0, 2**64 - 1), st.booleans(), st.binary(max_size=300)),
    st.builds(Ack, st.integers(0, 2**64 - 1)),
    st.builds(Ping, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)),
    st.builds(Pong, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)),
    st.builds(Goodbye, st.sampled_from(GoodbyeCode), st.text(max_size=50)),
    st.just(HELLO),
)


def _feed_all(decoder: Decoder, pieces: list[bytes]) -> None:
    try:
        for piece in pieces:
            decoder.feed(piece)
            # at most one incomplete frame is held: header + body <= max_frame
            assert len(decoder.partial) < HEADER.size + MAX_FRAME
    except RemoteProtocolError as exc:
        assert str(exc)  # names what was wrong


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=600), max_size=20))
def test_fuzz_random_bytes(pieces: list[bytes]) -> None:
    _feed_all(Decoder(MAX_FRAME), pieces)


@settings(max_examples=300)
@given(
    st.lists(valid_frames, min_size=1, max_size=8),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.lists(st.integers(0, 10_000), max_size=6),
)
def test_fuzz_mutated_frames(
    frames: list[object], flips: list[tuple[int, int]], cuts: list[int]
) -> None:
    stream = bytearray(b"".join(encode(f) for f in frames))  # type: ignore[arg-type]
    for pos, value in flips:
        stream[pos % len(stream)] = value
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [bytes(stream[a:b]) for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    _feed_all(Decoder(MAX_FRAME), pieces)


def test_encode_data_length_counts_the_body_only() -> None:
    raw = encode_data(1, b"xyz")
    length, kind = HEADER.unpack_from(raw)
    assert kind == Kind.DATA and length == len(raw) - HEADER.size == 9 + 3


def test_hello_at_the_floor_is_accepted() -> None:
    (hello,) = Decoder(1 << 20).feed(_hello_with(max_frame=MIN_MAX_FRAME, max_message=1))
    assert isinstance(hello, Hello) and hello.max_frame == MIN_MAX_FRAME


def test_goodbye_reason_is_cut_at_the_documented_length() -> None:
    raw = HEADER.pack(2 + (1 << 20), Kind.GOODBYE) + b"\x00\x01" + b"r" * (1 << 20)
    (goodbye,) = Decoder(2 << 20).feed(raw)
    assert isinstance(goodbye, Goodbye)
    assert len(goodbye.reason) <= MAX_REASON
    assert goodbye.reason.startswith("rrrr") and goodbye.reason.endswith("\u2026")


def test_goodbye_reason_cannot_forge_a_log_line() -> None:
    reason = "bye\n2026-01-01 INFO peer 10.0.0.1: all good\x1b[2J\u2028"
    (goodbye,) = Decoder(1 << 20).feed(encode(Goodbye(GoodbyeCode.NORMAL, reason)))
    assert isinstance(goodbye, Goodbye)
    assert goodbye.reason == "bye\\n2026-01-01 INFO peer 10.0.0.1: all good\\x1b[2J\\u2028"
    assert goodbye.reason.isprintable()


@given(st.binary(max_size=3000))
def test_any_goodbye_reason_decodes_to_one_bounded_printable_line(reason: bytes) -> None:
    raw = HEADER.pack(2 + len(reason), Kind.GOODBYE) + b"\x00\x00" + reason
    (goodbye,) = Decoder(1 << 20).feed(raw)
    assert isinstance(goodbye, Goodbye)
    assert goodbye.reason.isprintable() and len(goodbye.reason) <= MAX_REASON
