"""docs/PROTOCOL.md section 9 shows the exact bytes the encoder writes, and they decode back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from peerwatch.core.decoder import Decoder
from peerwatch.core.frames import (
    FLAG_SESSION,
    NO_SESSION_ID,
    NO_TOKEN,
    PROTOCOL_VERSION,
    Ack,
    Data,
    Frame,
    Goodbye,
    GoodbyeCode,
    Hello,
    Resume,
    encode,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
SESSION_ID = bytes(range(0x10, 0x20))
TOKEN = bytes(range(0xA0, 0xC0))
FRAMES: dict[str, Frame] = {
    "client HELLO": Hello(
        PROTOCOL_VERSION, 0x0102030405060708, 1.0, 5.0, 1 << 20, 1 << 24,
        FLAG_SESSION, NO_SESSION_ID, NO_TOKEN,
    ),
    "server HELLO": Hello(
        PROTOCOL_VERSION, 0x1112131415161718, 1.0, 5.0, 1 << 20, 1 << 24,
        FLAG_SESSION, SESSION_ID, TOKEN,
    ),
    "refusing server HELLO": Hello(
        PROTOCOL_VERSION, 0x1112131415161718, 1.0, 5.0, 1 << 20, 1 << 24,
        FLAG_SESSION, NO_SESSION_ID, NO_TOKEN,
    ),
    "RESUME": Resume(0, 0),
    "DATA": Data(1, False, b"hi"),
    "ACK": Ack(1),
    "GOODBYE": Goodbye(GoodbyeCode.SESSION_UNKNOWN, "no"),
}  # fmt: skip


HEX_PREFIX = re.compile(r"(?:[0-9a-f]{2} ?)+")  # the bytes; two spaces start the comment


def documented_frames() -> dict[str, bytes]:
    """Each ``frame: NAME`` block of the doc: the hex before each line's comment, joined."""
    frames = {}
    for name, body in re.findall(r"```\nframe: (.+?)\n(.*?)```", DOC.read_text(), re.DOTALL):
        hex_parts = []
        for line in body.splitlines():
            match = HEX_PREFIX.match(line)
            assert match is not None, f"{name}: a line without bytes: {line!r}"
            hex_parts.append(match.group())
        frames[name] = bytes.fromhex("".join(hex_parts))
    return frames


def test_every_example_frame_is_documented() -> None:
    assert set(documented_frames()) == set(FRAMES)


@pytest.mark.parametrize("name", FRAMES)
def test_documented_bytes_are_what_the_encoder_writes_and_decode_back(name: str) -> None:
    raw = documented_frames()[name]
    assert raw == encode(FRAMES[name])
    assert Decoder(1 << 20, sessions=True).feed(raw) == [FRAMES[name]]
