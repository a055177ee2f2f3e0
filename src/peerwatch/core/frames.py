"""The peerwatch wire format: length-prefixed frames, every integer big-endian.

Frame layout (RFC 1700 network byte order)::

    +----------------+--------+------------------------+
    | length: u32    | kind:u8| body: `length` bytes   |
    +----------------+--------+------------------------+

``length`` counts the body only, so a reader knows after 5 bytes how much to
expect and can refuse a frame longer than ``max_frame`` before buffering it.

Bodies by kind::

    HELLO    magic "PW" | version u8 | flags u8 | incarnation u64 |
             interval_ms u32 | timeout_ms u32 | max_frame u32 | max_message u32
             [flags bit 0 SESSION: session_id 16 bytes | token 32 bytes]
    DATA     seq u64 | flags u8 (bit 0: MORE chunks follow) | payload
             a chunk with MORE set carries at least one byte, and one message
             arrives in at most ``max_parts(max_message)`` DATA frames
    ACK      seq u64            cumulative: every message up to seq was received
    PING     seq u32 | stamp u64    stamp is opaque to the receiver and echoed back
    PONG     seq u32 | stamp u64
    GOODBYE  code u16 | reason (UTF-8, at most 1 KiB)
    RESUME   received_through u64 | consumed_through u64   (sessions only)

Limits a peer must announce in its HELLO (below them it is refused with
GOODBYE(PROTOCOL_ERROR) naming the floor, never served at a crawl):
``max_frame >= MIN_MAX_FRAME`` and ``max_message >= 1``.

docs/PROTOCOL.md is the full specification (state machine, every refusal, sessions).

Frames are NamedTuples: immutable and cheap to build on the hot DATA path.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from typing import NamedTuple

from peerwatch.errors import LocalProtocolError, RemoteProtocolError

PROTOCOL_VERSION = 1
MAGIC = b"PW"
HEADER = struct.Struct("!IB")
HEADER_SIZE = HEADER.size  # 5
HELLO_BODY = struct.Struct("!2sBBQIIII")
DATA_HEADER = struct.Struct("!IBQB")  # full frame header of a DATA frame
DATA_BODY_HEADER_SIZE = 9  # seq u64 + flags u8
DATA_FRAME_OVERHEAD = DATA_HEADER.size  # 14 bytes before a DATA frame's payload
ACK_FRAME = struct.Struct("!IBQ")
PING_FRAME = struct.Struct("!IBIQ")
SEQ = struct.Struct("!Q")
PING_BODY = struct.Struct("!IQ")
#: A whole PING (or PONG) frame: u32 length 12, kind, u32 seq, u64 stamp.
PING_FRAME_SIZE = PING_FRAME.size  # 17
#: The first five bytes of every PING frame: what the PING fast path recognises.
PING_HEAD = HEADER.pack(PING_BODY.size, 4)  # Kind.PING, defined below
#: The first five bytes of every PONG frame: what the PONG fast path recognises.
PONG_HEAD = HEADER.pack(PING_BODY.size, 5)  # Kind.PONG
GOODBYE_HEAD = struct.Struct("!H")
MAX_REASON = 1024
FLAG_MORE = 0x01
#: HELLO flag: the sender speaks the session extension; id and token follow the body.
FLAG_SESSION = 0x01
SESSION_ID_SIZE = 16
TOKEN_SIZE = 32
#: Session id and token of a client asking for a new session.
NO_SESSION_ID = bytes(SESSION_ID_SIZE)
NO_TOKEN = bytes(TOKEN_SIZE)
RESUME_FRAME = struct.Struct("!IBQQ")
RESUME_BODY = struct.Struct("!QQ")
#: Smallest max_frame a peer may announce (and we may configure). Below it every
#: message is cut into tiny frames: at 64 bytes a 1 MiB echo took ~10 s of CPU in one
#: loop pass (issue 8, item 6). 4 KiB keeps the frame overhead under 0.4 %.
MIN_MAX_FRAME = 4096
#: Smallest chunk a sender cuts a message into; it bounds the parts of one message.
MIN_CHUNK = 512


def max_parts(max_message: int) -> int:
    """Most DATA frames one message of at most ``max_message`` bytes may arrive in.

    An honest sender cuts every chunk but the last at its chunk size, which is at
    least ``MIN_CHUNK``; a peer cutting finer (2-byte chunks cost 29 x the
    message in per-part overhead, issue 8 item 7) is refused past this count.
    """
    return max_message // MIN_CHUNK + 1


def printable(text: str, limit: int = MAX_REASON) -> str:
    """``text`` safe to log as one line: control and other unprintable characters escaped.

    A peer's GOODBYE reason goes into verdicts and logs; a newline in it would
    forge a log line and a 1 MiB reason would make a 1 MiB one. The result is at
    most ``limit`` characters (a cut is marked with an ellipsis).
    """
    if not text.isprintable():
        text = "".join(
            c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
        )
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return text


class Kind(enum.IntEnum):
    HELLO = 1
    DATA = 2
    ACK = 3
    PING = 4
    PONG = 5
    GOODBYE = 6
    RESUME = 7


#: The PING's and PONG's kinds as plain ints, for the idle connection's commonest frames:
#: what a read's fifth byte is compared with, and what they are packed with (an IntEnum
#: compares through its class, and packs through ``__index__``).
PING_KIND, PONG_KIND = int(Kind.PING), int(Kind.PONG)


class GoodbyeCode(enum.IntEnum):
    """Why a side says goodbye (like MQTT 5 reason codes)."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    TOO_MANY_PINGS = 2
    GOING_AWAY = 3  # server shutting down
    HANDSHAKE_TIMEOUT = 4
    MESSAGE_TOO_BIG = 5
    OVERLOADED = 6  # refused: too many connections
    SESSION_UNKNOWN = 7  # no session with this id and token (also a wrong token)
    SESSION_LOST = 8  # the sender ended the session for good

    @classmethod
    def of(cls, value: int) -> GoodbyeCode | int:
        try:
            return cls(value)
        except ValueError:
            return value


class Hello(NamedTuple):
    version: int
    incarnation: int  # random per process start: a new value means the peer restarted
    interval: float  # peer's ping interval, seconds
    timeout: float  # how long the peer waits before declaring us dead, seconds
    max_frame: int  # largest frame body the peer accepts
    max_message: int  # largest reassembled message the peer accepts
    flags: int = 0
    session_id: bytes = b""  # with FLAG_SESSION: 16 bytes, all zero asks for a new session
    token: bytes = b""  # with FLAG_SESSION: 32 bytes, the secret that proves the session is ours


class Data(NamedTuple):
    seq: int
    more: bool  # True: a chunk; the message continues in the next DATA frame
    payload: bytes


class Ack(NamedTuple):
    seq: int


class Ping(NamedTuple):
    seq: int
    stamp: int


class Pong(NamedTuple):
    seq: int
    stamp: int


class Goodbye(NamedTuple):
    code: GoodbyeCode | int
    reason: str


class Resume(NamedTuple):
    received_through: int  # highest peer seq this side's session holds
    consumed_through: int  # highest peer seq this side's application took


Frame = Hello | Data | Ack | Ping | Pong | Goodbye | Resume


class DataRun(NamedTuple):
    """Consecutive whole DATA frames (MORE clear) of one read, as the decoder batches them.

    Not a wire frame: ``Decoder.feed_runs`` hands out one of these for each run of
    whole messages instead of a ``Data`` per frame, so a read of many small messages
    costs one object and one list, not one tuple per message (issue 13). The
    sequence numbers are ``first_seq, first_seq + 1, ...``: a frame out of sequence
    starts a new run, and the receiver's sequence check (``Inbound.on_run``) refuses it.
    """

    first_seq: int
    payloads: list[bytes]


def encode_hello(hello: Hello) -> bytes:
    body = HELLO_BODY.pack(
        MAGIC,
        hello.version,
        hello.flags,
        hello.incarnation,
        round(hello.interval * 1000),
        round(hello.timeout * 1000),
        hello.max_frame,
        hello.max_message,
    )
    # written as given, unchecked like every encoder here: FLAG_SESSION, a 16-byte id and
    # a 32-byte token belong together, and the decoder refuses any other combination (the
    # fuzz tests send such HELLOs on purpose)
    body += hello.session_id + hello.token
    return HEADER.pack(len(body), Kind.HELLO) + body


def encode_data(seq: int, payload: bytes, more: bool = False) -> bytes:
    return DATA_HEADER.pack(DATA_BODY_HEADER_SIZE + len(payload), Kind.DATA, seq, more) + payload


def encode_data_run(
    first_seq: int, queue: deque[bytes], max_bytes: int, max_frames: int, max_payload: int
) -> tuple[bytes, int]:
    """Whole messages from the front of ``queue`` as DATA frames ``first_seq``, ``first_seq
    + 1``, ... in one buffer, and how many it took (popped from ``queue``).

    It stops after the frame that reaches ``max_bytes``, after ``max_frames`` frames, or
    before a payload over ``max_payload`` (one to cut in chunks): one pass and one join
    for the lot, not a concatenation per frame (the batched send path, issue 13).
    """
    pack = DATA_HEADER.pack
    popleft = queue.popleft
    kind = int(Kind.DATA)
    parts: list[bytes] = []
    seq = first_seq
    end = first_seq + max_frames
    size = 0
    while queue and size < max_bytes and seq < end:
        length = len(queue[0])
        if length > max_payload:
            break
        parts += (pack(DATA_BODY_HEADER_SIZE + length, kind, seq, 0), popleft())
        size += DATA_FRAME_OVERHEAD + length
        seq += 1
    return b"".join(parts), seq - first_seq


def encode_ack(seq: int) -> bytes:
    return ACK_FRAME.pack(8, Kind.ACK, seq)


def encode_ping(seq: int, stamp: int) -> bytes:
    return PING_FRAME.pack(12, PING_KIND, seq & 0xFFFFFFFF, stamp & 0xFFFFFFFFFFFFFFFF)


def encode_pong(seq: int, stamp: int) -> bytes:
    return PING_FRAME.pack(12, PONG_KIND, seq & 0xFFFFFFFF, stamp & 0xFFFFFFFFFFFFFFFF)


def encode_resume(received_through: int, consumed_through: int) -> bytes:
    return RESUME_FRAME.pack(RESUME_BODY.size, Kind.RESUME, received_through, consumed_through)


def encode_goodbye(code: GoodbyeCode | int, reason: str = "") -> bytes:
    text = reason.encode("utf-8")[:MAX_REASON]
    # a cut may split a multi-byte character; the decoder replaces it rather than fail
    body = GOODBYE_HEAD.pack(int(code)) + text
    return HEADER.pack(len(body), Kind.GOODBYE) + body


def decode_goodbye(source: bytes | bytearray, at: int, length: int) -> Goodbye:
    """The GOODBYE whose ``length``-byte body starts at ``source[at]`` (the decoder's part).

    Here, next to ``GoodbyeCode``, because a ``GoodbyeCode | int`` must stay a Python
    object: a mypyc-compiled module would hold it as a machine int and lose the enum
    (this module is never compiled, tools/compile_core.py).
    """
    if length < GOODBYE_HEAD.size:
        raise RemoteProtocolError(f"GOODBYE frame body of {length} bytes is too short")
    (code,) = GOODBYE_HEAD.unpack_from(source, at)
    # the reason is peer text bound for verdicts and logs: cut at the documented
    # length and escaped here, once, at the receive boundary
    cut = min(length, GOODBYE_HEAD.size + MAX_REASON)
    text = bytes(source[at + 2 : at + cut]).decode("utf-8", errors="replace")
    if length > cut:
        text += "\u2026"
    return Goodbye(GoodbyeCode.of(code), printable(text))


def goodbye_name(frame: Goodbye) -> str:
    """The code of ``frame`` for people: its name, or ``code N`` for one we do not know
    (here and not in the protocol for the reason given in ``decode_goodbye``)."""
    code = frame.code
    return code.name if isinstance(code, GoodbyeCode) else f"code {code}"


def encode(frame: Frame) -> bytes:
    """Encode any frame (the hot paths call the specific encoders directly)."""
    if isinstance(frame, Hello):
        return encode_hello(frame)
    if isinstance(frame, Data):
        return encode_data(frame.seq, frame.payload, frame.more)
    if isinstance(frame, Ack):
        return encode_ack(frame.seq)
    if isinstance(frame, Ping):
        return encode_ping(frame.seq, frame.stamp)
    if isinstance(frame, Pong):
        return encode_pong(frame.seq, frame.stamp)
    if isinstance(frame, Goodbye):
        return encode_goodbye(frame.code, frame.reason)
    if isinstance(frame, Resume):
        return encode_resume(frame.received_through, frame.consumed_through)
    raise LocalProtocolError(f"not a frame: {frame!r}")


def encode_chunk(seq: int, payload: bytes, offset: int, chunk_size: int) -> tuple[bytes, int]:
    """The DATA frame for ``payload[offset:offset + chunk_size]`` and the offset after it
    (0 once the message is complete): the one chunker, used by the protocol's outbox.

    Chunking lets PING/PONG/ACK frames interleave with a large message instead
    of waiting behind it (the python-websockets #1005 lesson).
    """
    end = offset + chunk_size
    more = end < len(payload)
    return encode_data(seq, payload[offset:end], more), end if more else 0


def chunk_message(seq: int, payload: bytes, chunk_size: int) -> list[bytes]:
    """Every DATA frame of one message cut at ``chunk_size`` (``encode_chunk`` in a loop)."""
    frames = [encode_chunk(seq, payload, 0, chunk_size)]
    while frames[-1][1]:
        frames.append(encode_chunk(seq, payload, frames[-1][1], chunk_size))
    return [frame for frame, _ in frames]
