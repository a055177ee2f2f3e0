"""The session extension on the wire: session HELLO and RESUME round-trip, bad ones are refused."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerwatch.core.decoder import Decoder
from peerwatch.core.frames import (
    FLAG_SESSION,
    HEADER,
    HELLO_BODY,
    PROTOCOL_VERSION,
    Goodbye,
    GoodbyeCode,
    Hello,
    Kind,
    Resume,
    encode,
    encode_goodbye,
    encode_hello,
    encode_resume,
)
from peerwatch.errors import RemoteProtocolError

SESSION_ID = bytes(range(16))
TOKEN = bytes(range(100, 132))
SESSION_HELLO = Hello(
    PROTOCOL_VERSION, 7, 0.5, 2.0, 1 << 20, 16 << 20, FLAG_SESSION, SESSION_ID, TOKEN
)


def test_session_hello_appends_id_and_token_after_the_plain_body() -> None:
    raw = encode_hello(SESSION_HELLO)
    assert HEADER.unpack_from(raw) == (HELLO_BODY.size + 48, Kind.HELLO)
    assert raw[-48:] == SESSION_ID + TOKEN


def test_resume_layout_is_two_big_endian_u64() -> None:
    assert encode_resume(0x0102, 0x0304) == struct.pack(">IBQQ", 16, 7, 0x0102, 0x0304)


@pytest.mark.parametrize(
    "frame",
    [SESSION_HELLO, Resume(0, 0), Resume(2**64 - 1, 5), Goodbye(GoodbyeCode.SESSION_LOST, "")],
    ids=lambda f: type(f).__name__,
)
def test_session_frames_round_trip_whole_and_byte_by_byte(frame: object) -> None:
    raw = encode(frame)  # type: ignore[arg-type]
    assert Decoder(1 << 20, sessions=True).feed(raw) == [frame]
    decoder = Decoder(1 << 20, sessions=True)
    out = [f for i in range(len(raw)) for f in decoder.feed(raw[i : i + 1])]
    assert out == [frame]


def test_a_plain_hello_still_decodes_with_empty_session_fields() -> None:
    plain = SESSION_HELLO._replace(flags=0, session_id=b"", token=b"")
    (decoded,) = Decoder(1 << 20, sessions=True).feed(encode_hello(plain))
    assert decoded == plain


def _hello_body(flags: int, extra: bytes) -> bytes:
    body = HELLO_BODY.pack(b"PW", PROTOCOL_VERSION, flags, 1, 500, 2000, 1 << 20, 1 << 20)
    return body + extra


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_hello_body(FLAG_SESSION, b""), "with the SESSION flag set"),
        (_hello_body(0, bytes(48)), "with the SESSION flag clear"),
        (_hello_body(FLAG_SESSION, bytes(47)), "HELLO frame body must be 28 bytes, got 75"),
        (_hello_body(0, bytes(1)), "HELLO frame body must be 28 bytes, got 29"),
    ],
)
def test_a_hello_whose_size_and_flag_disagree_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        Decoder(1 << 20, sessions=True).feed(HEADER.pack(len(body), Kind.HELLO) + body)


@pytest.mark.parametrize("length", [0, 8, 15, 17, 24])
def test_a_resume_of_the_wrong_size_is_refused(length: int) -> None:
    expected = f"RESUME frame body must be 16 bytes, got {length}"
    with pytest.raises(RemoteProtocolError, match=expected):
        Decoder(1 << 20, sessions=True).feed(HEADER.pack(length, Kind.RESUME) + bytes(length))


def test_session_goodbye_codes_have_names() -> None:
    (frame,) = Decoder(1 << 20, sessions=True).feed(encode_goodbye(7, "x"))
    assert isinstance(frame, Goodbye) and frame.code is GoodbyeCode.SESSION_UNKNOWN


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=32, max_size=32))
def test_any_id_and_token_round_trip(session_id: bytes, token: bytes) -> None:
    hello = SESSION_HELLO._replace(session_id=session_id, token=token)
    assert Decoder(1 << 20, sessions=True).feed(encode_hello(hello)) == [hello]
