"""Incremental frame decoder: feed bytes in any split, get whole frames out.

Memory is bounded: a header announcing a body over ``max_frame`` is refused
before its body is buffered, so the buffer never holds more than one partial
frame plus the bytes handed to the current ``feed`` call. Every malformed
input ends in ``RemoteProtocolError`` naming what was wrong; no other
exception escapes (the fuzz tests hold us to it).
"""

from __future__ import annotations

import struct

from peerwatch.core.frames import (
    DATA_BODY_HEADER_SIZE,
    DATA_HEADER,
    FLAG_MORE,
    FLAG_SESSION,
    HEADER,
    HEADER_SIZE,
    HELLO_BODY,
    MAGIC,
    MIN_MAX_FRAME,
    PING_BODY,
    PROTOCOL_VERSION,
    RESUME_BODY,
    SEQ,
    SESSION_ID_SIZE,
    TOKEN_SIZE,
    Ack,
    Data,
    DataRun,
    Frame,
    Hello,
    Kind,
    Ping,
    Pong,
    Resume,
    decode_goodbye,
)
from peerwatch.core.shared import shared
from peerwatch.errors import RemoteProtocolError

_DATA_HEAD = struct.Struct("!QB")
#: Bytes before a DATA frame's payload: length, kind, seq, flags.
_DATA_FRAME_HEAD = DATA_HEADER.size
_FIXED_SIZES = {Kind.ACK: 8, Kind.PING: 12, Kind.PONG: 12, Kind.RESUME: RESUME_BODY.size}
#: HELLO body sizes: plain, and with the session id and token (FLAG_SESSION).
_HELLO_SIZE = HELLO_BODY.size
_SESSION_HELLO_SIZE = HELLO_BODY.size + SESSION_ID_SIZE + TOKEN_SIZE


class Decoder:
    """Turns a byte stream into frames. One instance per connection direction."""

    __slots__ = ("max_frame", "partial", "sessions")

    def __init__(self, max_frame: int, *, sessions: bool = False) -> None:
        """``sessions``: this side speaks the session extension, so RESUME is a frame."""
        self.max_frame = max_frame
        self.sessions = sessions
        # the bytes of a frame not yet complete: empty between frames. An attribute, not a
        # property: the idle connection's commonest reads test it (``Protocol.take_pong``)
        self.partial = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data`` and return every frame it completes, in order."""
        frames: list[Frame] = []
        for item in self.feed_runs(data):
            if type(item) is DataRun:
                seq = item.first_seq
                frames += (Data(seq + i, False, p) for i, p in enumerate(item.payloads))
            else:
                frames.append(item)  # type: ignore[arg-type]
        return frames

    def feed_runs(self, data: bytes) -> list[Frame | DataRun]:
        """``feed``, with each run of consecutive whole DATA frames as one ``DataRun``.

        The receive path of ``Protocol``: the run's payload list becomes the list of
        messages handed to the application, so a read of many small messages builds
        no object per message but its payload (issue 13; ``bench/tp_core.py``).
        """
        buf = self.partial
        if type(data) is not bytes:
            data = bytes(data)
        if buf:
            if len(buf) >= HEADER_SIZE:  # its header was checked when it arrived
                missing = HEADER_SIZE + HEADER.unpack_from(buf)[0] - len(buf)
                if len(data) < missing:  # the frame is still not complete: keep it
                    buf += data
                    return []
            source = b"".join((buf, data))  # one copy per completed split frame
            buf.clear()
        else:
            source = data
        frames: list[Frame | DataRun] = []
        pos = 0
        end = len(source)
        unpack_header = HEADER.unpack_from
        unpack_data = DATA_HEADER.unpack_from
        max_frame = self.max_frame
        while end - pos >= HEADER_SIZE:
            length, kind = unpack_header(source, pos)
            if length > max_frame:
                raise RemoteProtocolError(
                    f"frame of {length} bytes exceeds max_frame ({max_frame} bytes)"
                )
            stop = pos + HEADER_SIZE + length
            if stop > end:
                break
            body_at = pos + HEADER_SIZE
            if kind == Kind.DATA:
                if length < DATA_BODY_HEADER_SIZE:
                    raise RemoteProtocolError(f"DATA frame body of {length} bytes is too short")
                seq, flags = _DATA_HEAD.unpack_from(source, body_at)
                if flags & ~FLAG_MORE:
                    raise RemoteProtocolError(f"DATA frame with unknown flags 0x{flags:02x}")
                if flags:
                    frames.append(Data(seq, True, source[body_at + 9 : stop]))
                    pos = stop
                    continue
                # the hot path: whole messages in sequence, one header unpack each; any
                # other frame leaves the run and is checked by the general path above
                payloads = [source[body_at + 9 : stop]]
                frames.append(DataRun(seq, payloads))
                append = payloads.append
                pos = stop
                while end - pos >= _DATA_FRAME_HEAD:
                    length, kind, next_seq, flags = unpack_data(source, pos)
                    seq += 1
                    stop = pos + HEADER_SIZE + length
                    if (
                        kind != Kind.DATA
                        or flags
                        or next_seq != seq
                        or stop > end
                        or length > max_frame
                        or length < DATA_BODY_HEADER_SIZE
                    ):
                        break
                    append(source[pos + _DATA_FRAME_HEAD : stop])
                    pos = stop
                continue
            if kind == Kind.RESUME and not self.sessions:
                # without it, a plain connection would ignore kind 7 where it used to
                # refuse an unknown kind (docs/PROTOCOL.md 8.2)
                raise RemoteProtocolError("RESUME outside a session (plain connection)")
            frames.append(_decode_control(kind, source, body_at, length))
            pos = stop
        if pos < end:
            buf += memoryview(source)[pos:]
        return frames


def _decode_control(kind: int, source: bytes | bytearray, at: int, length: int) -> Frame:
    expected = _FIXED_SIZES.get(kind)  # type: ignore[call-overload]
    if expected is not None and length != expected:
        name = Kind(kind).name
        raise RemoteProtocolError(f"{name} frame body must be {expected} bytes, got {length}")
    if kind == Kind.ACK:
        return Ack(SEQ.unpack_from(source, at)[0])
    if kind == Kind.PING:
        return Ping(*PING_BODY.unpack_from(source, at))
    if kind == Kind.PONG:
        return Pong(*PING_BODY.unpack_from(source, at))
    if kind == Kind.RESUME:
        return Resume(*RESUME_BODY.unpack_from(source, at))
    if kind == Kind.HELLO:
        return _decode_hello(source, at, length)
    if kind == Kind.GOODBYE:
        return decode_goodbye(source, at, length)
    raise RemoteProtocolError(f"unknown frame kind {kind}")


def _decode_hello(source: bytes | bytearray, at: int, length: int) -> Hello:
    if length not in (_HELLO_SIZE, _SESSION_HELLO_SIZE):
        raise RemoteProtocolError(f"HELLO frame body must be {_HELLO_SIZE} bytes, got {length}")
    magic, version, flags, incarnation, interval_ms, timeout_ms, max_frame, max_message = (
        HELLO_BODY.unpack_from(source, at)
    )
    session = bool(flags & FLAG_SESSION)
    if session != (length == _SESSION_HELLO_SIZE):
        raise RemoteProtocolError(
            f"HELLO of {length} bytes with the SESSION flag {'set' if session else 'clear'}"
            f" (a session HELLO is {_SESSION_HELLO_SIZE} bytes, a plain one {_HELLO_SIZE})"
        )
    if magic != MAGIC:
        raise RemoteProtocolError(f"bad HELLO magic {magic!r}: not a peerwatch peer")
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"unknown protocol version {version} (this side speaks {PROTOCOL_VERSION})"
        )
    if interval_ms == 0 or timeout_ms <= interval_ms:
        raise RemoteProtocolError(
            f"HELLO with impossible liveness settings: interval {interval_ms} ms,"
            f" timeout {timeout_ms} ms"
        )
    if max_frame < MIN_MAX_FRAME:
        raise RemoteProtocolError(
            f"HELLO announces max_frame {max_frame}, below the floor of {MIN_MAX_FRAME} bytes"
            " (every message would be cut into tiny frames)"
        )
    if max_message == 0:
        raise RemoteProtocolError("HELLO announces max_message 0: no message could ever be sent")
    session_id = token = b""
    if session:
        id_at = at + _HELLO_SIZE
        session_id = bytes(source[id_at : id_at + SESSION_ID_SIZE])
        token = bytes(source[id_at + SESSION_ID_SIZE : at + length])
    # the peer's settings are most likely every other peer's: one object each (``shared``)
    return Hello(
        version,
        incarnation,
        shared(interval_ms / 1000),
        shared(timeout_ms / 1000),
        shared(max_frame),
        shared(max_message),
        flags,
        session_id,
        token,
    )
