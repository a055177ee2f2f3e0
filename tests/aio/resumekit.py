"""A TCP middlebox on loopback for resumable-session tests: forwards bytes, cuts with RST.

``Cutter`` listens on 127.0.0.1, and for each accepted client opens its own
connection to the target; ``cut()`` aborts both halves of every pair with
SO_LINGER 0, so each end's kernel sees RST (a middlebox reset, a NAT that lost
the mapping). ``hold()`` stops forwarding without closing anything (a
partition); ``release()`` lets bytes flow again. ``cut_client_side()`` resets
only the client's half and leaves the server's open and silent (the server
cannot know yet that its client went away).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from peerwatch.core.decoder import Decoder
from peerwatch.core.frames import (
    FLAG_SESSION,
    NO_SESSION_ID,
    NO_TOKEN,
    PROTOCOL_VERSION,
    Frame,
    Hello,
    encode_hello,
)

LINGER_RST = struct.pack("ii", 1, 0)


class Cutter:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self.cuts = 0
        self._server: asyncio.AbstractServer | None = None
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._kept: list[asyncio.StreamWriter] = []  # server halves left open on purpose
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._replies_flowing = asyncio.Event()  # server -> client only
        self._replies_flowing.set()
        self.refusing = False  # True: every new connection is reset at once (peer unreachable)

    async def __aenter__(self) -> Cutter:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._flowing.set()
        self.cut()
        for writer in self._kept:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    def cut(self) -> int:
        """RST both halves of every connection now; returns how many were cut."""
        pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for writer in pair:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
                writer.transport.abort()
        self.cuts += len(pairs)
        return len(pairs)

    def cut_client_side(self) -> int:
        """RST the client's half of every connection; the server's half stays open, silent."""
        pairs, self._pairs = self._pairs, []
        for client_half, server_half in pairs:
            self._kept.append(server_half)
            sock = client_half.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            client_half.transport.abort()
        self.cuts += len(pairs)
        return len(pairs)

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()
        self._replies_flowing.set()

    def hold_replies(self) -> None:
        """Hold what the server sends (its ACKs too); the client's bytes still pass."""
        self._replies_flowing.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refusing:
            sock = writer.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._pairs.append((writer, up_writer))
        for source, sink, gate in (
            (reader, up_writer, self._flowing),
            (up_reader, writer, self._replies_flowing),
        ):
            task = asyncio.ensure_future(self._pipe(source, sink, gate))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, gate: asyncio.Event
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await source.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                await gate.wait()
                sink.write(data)
                await sink.drain()
        if sink not in self._kept:
            sink.transport.abort()


async def raw_exchange(
    port: int, data: bytes, wait: float = 3.0, *, then: bytes = b""
) -> list[Frame]:
    """Write ``data`` to a peerwatch server as a hand-written peer (and ``then`` 0.2 s
    later, once it answered); every frame it answers until it closes the connection
    (at most ``wait`` seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    decoder = Decoder(1 << 20, sessions=True)
    frames: list[Frame] = []
    try:
        writer.write(data)
        if then:
            await asyncio.sleep(0.2)
            writer.write(then)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), deadline - loop.time())
            except (asyncio.TimeoutError, OSError):
                break
            if not chunk:
                break
            frames.extend(decoder.feed(chunk))
    finally:
        writer.transport.abort()
    return frames


def session_hello(session_id: bytes = NO_SESSION_ID, token: bytes = NO_TOKEN) -> bytes:
    """A client's session HELLO (all zeros: asks for a new session)."""
    return encode_hello(
        Hello(PROTOCOL_VERSION, 7, 0.2, 1.0, 1 << 20, 1 << 20, FLAG_SESSION, session_id, token)
    )
