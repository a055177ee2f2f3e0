"""The floors peerwatch is measured against: the least code that does the same job.

* ``FramedReceiver``: a bare asyncio Protocol doing 4-byte big-endian length-prefixed
  framing, handing each message to the application through an asyncio.Queue read by
  a consumer task (as peerwatch's ``recv()`` does), with the same backpressure
  (stop reading the socket past ``queue_limit`` waiting messages).
* ``FramedSender``: writes one length-prefixed frame per message, honouring
  ``pause_writing``/``resume_writing``.
* ``PingFloor``: ONE shared timer for all connections; every interval it writes an
  8-byte ping to each connection and drops those not heard from within the timeout.
  The peer echoes (``EchoProtocol``). This is the least a user-space heartbeat costs.
* ``KeepaliveOnly``: SO_KEEPALIVE with TCP_KEEPIDLE=1 s and nothing in user space.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import cast

END = b"END"  # marks the end of a throughput run; payloads never start with it
PING = struct.Struct(">Q")


class FramedReceiver(asyncio.Protocol):
    def __init__(self, on_message: Callable[[bytes], None] | None = None, queue_limit: int = 1024):
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queue_limit = queue_limit
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        offset = 0
        size = len(buffer)
        put = self.queue.put_nowait
        while size - offset >= 4:
            length = int.from_bytes(buffer[offset : offset + 4], "big")
            end = offset + 4 + length
            if end > size:
                break
            put(bytes(buffer[offset + 4 : end]))
            offset = end
        if offset:
            del buffer[:offset]
        if self.queue.qsize() >= self.queue_limit and self.transport and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(None)

    async def recv(self) -> bytes | None:
        message = await self.queue.get()
        if self.reading_paused and self.queue.qsize() < self.queue_limit // 2:
            self.reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        return message

    def send(self, message: bytes) -> None:
        assert self.transport is not None
        self.transport.write(len(message).to_bytes(4, "big") + message)


class FramedSender(FramedReceiver):
    """Client side: the receiver (for the reply) plus write flow control."""

    def __init__(self) -> None:
        super().__init__()
        self.can_write = asyncio.Event()
        self.can_write.set()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()


class PingFloor:
    """One timer pings every connection; a connection unheard for ``timeout`` is closed."""

    def __init__(self, interval: float = 1.0, timeout: float = 5.0) -> None:
        self.interval = interval
        self.timeout = timeout
        self.connections: set[PingFloorProtocol] = set()
        self.pings_sent = 0
        self.pongs_received = 0
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.handle = loop.call_later(self.interval, self.tick)

    def tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        ping = PING.pack(int(now * 1e9))
        for conn in list(self.connections):
            if now - conn.last_heard > self.timeout:
                conn.transport.close()
                continue
            conn.transport.write(ping)
            self.pings_sent += 1
        self.handle = loop.call_at(now + self.interval, self.tick)

    def protocol(self) -> PingFloorProtocol:
        return PingFloorProtocol(self)


class PingFloorProtocol(asyncio.Protocol):
    transport: asyncio.Transport

    def __init__(self, floor: PingFloor) -> None:
        self.floor = floor
        self.last_heard = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.last_heard = asyncio.get_running_loop().time()
        self.floor.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_heard = asyncio.get_running_loop().time()
        self.floor.pongs_received += len(data) // PING.size

    def connection_lost(self, exc: Exception | None) -> None:
        self.floor.connections.discard(self)


class EchoProtocol(asyncio.Protocol):
    """Client of the ping floor: echoes every ping; counts them."""

    pings = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        EchoProtocol.pings += len(data) // PING.size
        self.transport.write(data)


def enable_keepalive(sock: socket.socket, idle: int = 1, interval: int = 1, count: int = 5) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)


class KeepaliveOnly(asyncio.Protocol):
    """Holds the connection and does nothing: the kernel's keepalive does the watching."""

    connections = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        KeepaliveOnly.connections += 1
        enable_keepalive(transport.get_extra_info("socket"))

    def connection_lost(self, exc: Exception | None) -> None:
        KeepaliveOnly.connections -= 1


class IdleProtocol(asyncio.Protocol):
    """Client side that holds a connection and ignores whatever arrives."""

    def data_received(self, data: bytes) -> None:
        pass
