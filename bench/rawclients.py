"""Minimal raw client sides of two protocols, for holding thousands of idle connections cheaply.

The idle benchmark measures the *server*; its peers only have to keep their side
of the protocol alive with the least CPU, so that 10,000 of them fit in one
load-generator process on the other core:

* ``RawWebSocketClient``: RFC 6455 opening handshake, then answers each PING
  (opcode 9) with a PONG (opcode 10) carrying the same payload; never pings itself.
* ``RawPeerwatchClient``: sends HELLO, waits for the server's HELLO, then does
  what a peerwatch client does: PINGs once per interval when ``ping`` is called
  (the load generator's one shared timer calls it, and skips a connection the
  server pinged within the interval: a server with ``batch_pings`` pings first),
  answers each PING with a PONG echoing its seq and stamp, and ACKs DATA. In
  peerwatch the connecting side pings and the accepting side only answers while
  those pings arrive, so the server under test does what it would do for real
  peerwatch clients.

Both count heartbeats in ``HandshakeCounter.pings``: pings answered (websockets,
whose server pings) or pongs received (peerwatch, whose client pings).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from typing import ClassVar, cast

WS_PONG = 0x8A
WS_CLOSE = 0x88


class HandshakeCounter(asyncio.Protocol):
    """Shared bookkeeping: how many handshakes completed, how many pings answered."""

    pings: ClassVar[int] = 0
    transport: asyncio.Transport
    goodbye = ""  # the server's GOODBYE (code byte and reason), if it sent one

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            why = self.goodbye or (type(exc).__name__ if exc is not None else "EOF")
            self.ready.set_exception(ConnectionError(f"closed during handshake: {why}"))


class RawWebSocketClient(HandshakeCounter):
    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host_header = f"{host}:{port}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET / HTTP/1.1\r\nHost: {self.host_header}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.ready.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(bytes(buffer[:80]).decode()))
                self.transport.close()
                return
            del buffer[: end + 4]
            self.ready.set_result(None)
        offset = 0
        while len(buffer) - offset >= 2:
            opcode = buffer[offset] & 0x0F
            length = buffer[offset + 1] & 0x7F
            header = 2
            if length == 126:
                if len(buffer) - offset < 4:
                    break
                length = int.from_bytes(buffer[offset + 2 : offset + 4], "big")
                header = 4
            elif length == 127:
                if len(buffer) - offset < 10:
                    break
                length = int.from_bytes(buffer[offset + 2 : offset + 10], "big")
                header = 10
            end = offset + header + length
            if end > len(buffer):
                break
            payload = bytes(buffer[offset + header : end])
            if opcode == 9 and length < 126:
                # masked PONG with an all-zero mask: payload bytes unchanged
                self.transport.write(bytes((WS_PONG, 0x80 | length)) + b"\0\0\0\0" + payload)
                HandshakeCounter.pings += 1
            elif opcode == 8:
                self.transport.write(bytes((WS_CLOSE, 0x80)) + b"\0\0\0\0")
                self.transport.close()
            offset = end
        del buffer[:offset]


# peerwatch wire format (see peerwatch.core.frames): u32 length | u8 kind | body
PW_HEADER = struct.Struct("!IB")
PW_HELLO, PW_DATA, PW_ACK, PW_PING, PW_PONG, PW_GOODBYE = 1, 2, 3, 4, 5, 6


def peerwatch_hello(interval: float, timeout: float) -> bytes:
    from peerwatch.core.frames import PROTOCOL_VERSION, Hello, encode_hello

    return encode_hello(
        Hello(
            version=PROTOCOL_VERSION,
            incarnation=int.from_bytes(os.urandom(8), "big"),
            interval=interval,
            timeout=timeout,
            max_frame=1024 * 1024,
            max_message=1024 * 1024,
        )
    )


PW_PING_FRAME = struct.Struct("!IBIQ")  # length 12 | kind | seq u32 | stamp u64


#: Sent right behind HELLO in ``confirm`` mode; the server's PONG proves it read our HELLO.
PW_CONFIRM_PING = PW_PING_FRAME.pack(12, PW_PING, 0, 0)


class RawPeerwatchClient(HandshakeCounter):
    hello = b""  # set once per process by the caller (peerwatch_hello)
    # ready at the PONG to a PING sent with HELLO, not at the server's HELLO: a
    # peerwatch server says HELLO as it accepts, before it has read the peer's
    confirm: ClassVar[bool] = False
    next_seq = 1
    ping_seq = 0
    pinged_at = 0.0  # time.monotonic() of the server's last PING (its pings hold ours back)

    def ping(self, stamp: int) -> None:
        """A PING, as a peerwatch client sends one each interval (the server only answers)."""
        self.ping_seq = (self.ping_seq + 1) & 0xFFFFFFFF
        self.transport.write(PW_PING_FRAME.pack(12, PW_PING, self.ping_seq, stamp))

    def send_data(self, payload: bytes) -> None:
        """One DATA frame carrying a whole message (seq u64, flags 0)."""
        header = PW_HEADER.pack(9 + len(payload), PW_DATA)
        self.transport.write(header + self.next_seq.to_bytes(8, "big") + b"\0" + payload)
        self.next_seq += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport.write(self.hello + PW_CONFIRM_PING if self.confirm else self.hello)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        offset = 0
        size = len(buffer)
        while size - offset >= 5:
            length, kind = PW_HEADER.unpack_from(buffer, offset)
            end = offset + 5 + length
            if end > size:
                break
            if kind == PW_PING:
                self.pinged_at = time.monotonic()
                # a PONG is the PING with its kind byte changed: seq and stamp echoed
                pong = bytearray(buffer[offset:end])
                pong[4] = PW_PONG
                self.transport.write(bytes(pong))
                HandshakeCounter.pings += 1
            elif kind == PW_PONG:
                HandshakeCounter.pings += 1
                if self.confirm and not self.ready.done():
                    self.ready.set_result(None)
            elif kind == PW_HELLO:
                if not self.confirm and not self.ready.done():
                    self.ready.set_result(None)
            elif kind == PW_DATA:
                seq = buffer[offset + 5 : offset + 13]
                if not buffer[offset + 13] & 1:  # last chunk of a message: acknowledge it
                    self.transport.write(PW_HEADER.pack(8, PW_ACK) + bytes(seq))
            elif kind == PW_GOODBYE:
                # why the server hung up, for a peer lost before its handshake completed
                code = int.from_bytes(buffer[offset + 5 : offset + 7], "big")
                reason = bytes(buffer[offset + 7 : end]).decode(errors="replace")
                self.goodbye = f"GOODBYE {code}: {reason}"
                self.transport.close()
            offset = end
        del buffer[:offset]
