"""A TCP middlebox on loopback for resumable-session tests: forwards bytes, cuts with RST.

``Cutter`` listens on 127.0.0.1, and for each accepted client opens its own
connection to the target; ``cut()`` aborts both halves of every pair with
SO_LINGER 0, so each end's kernel sees RST (a middlebox reset, a NAT that lost
the mapping). ``hold()`` stops forwarding without closing anything (a
partition); ``release()`` lets bytes flow again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

LINGER_RST = struct.pack("ii", 1, 0)


class Cutter:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self.cuts = 0
        self._server: asyncio.AbstractServer | None = None
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def __aenter__(self) -> Cutter:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._flowing.set()
        self.cut()
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

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._pairs.append((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await source.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        sink.transport.abort()
