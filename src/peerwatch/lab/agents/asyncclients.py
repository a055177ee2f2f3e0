"""Clients that speak a protocol with heartbeats: websockets and peerwatch.

Both take the same commands as the raw client (write, stream, check, stop)
and report what the application is told: the websockets ``ConnectionClosed``
exception with its close code, or the peerwatch ``Verdict`` with its cause.
For peerwatch the time of detection is the verdict's own ``detected_at``
(time.monotonic, like every lab timestamp), not when the report was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from typing import Any

from peerwatch.kernel.tcpinfo import tcp_info
from peerwatch.lab.agents.kit import Emit, watch_stalls

MESSAGE = b"kodos, are you there?"
CHECK = b"check"
STREAM_MESSAGE = b"x" * 1024
CHECK_TIMEOUT = 3.0


def commands_queue(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[dict[str, Any]]:
    """stdin JSON lines delivered into an asyncio queue (EOF becomes a stop command)."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def reader() -> None:
        for raw_line in sys.stdin:
            line = raw_line.strip()
            if line:
                with contextlib.suppress(ValueError):
                    loop.call_soon_threadsafe(queue.put_nowait, json.loads(line))
        loop.call_soon_threadsafe(queue.put_nowait, {"cmd": "stop"})

    threading.Thread(target=reader, name="commands", daemon=True).start()
    return queue


def socket_state(transport: Any) -> str | None:
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return None
    info = tcp_info(sock)
    return info.state.name if info is not None else None


class Session:
    """What both heartbeat clients share: command dispatch, streaming, echo checks."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.check_sent_at: float | None = None
        self.stream_task: asyncio.Task[None] | None = None
        self.over = asyncio.Event()

    def received(self, message: bytes) -> None:
        loop = asyncio.get_running_loop()
        if self.check_sent_at is not None and message == CHECK:
            self.emit("check", ok=True, rtt=loop.time() - self.check_sent_at)
            self.check_sent_at = None

    async def send(self, message: bytes) -> None:
        raise NotImplementedError

    async def stream_forever(self) -> None:
        while not self.over.is_set():
            await self.send(STREAM_MESSAGE)

    async def check(self) -> None:
        if self.over.is_set():
            self.emit("check", ok=False, why="connection already over")
            return
        self.check_sent_at = asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(self.send(CHECK), CHECK_TIMEOUT)
        except Exception as exc:
            self.emit("check", ok=False, why=repr(exc))
            self.check_sent_at = None
            return
        await asyncio.sleep(CHECK_TIMEOUT)
        if self.check_sent_at is not None:
            self.emit("check", ok=False, why="no echo")
            self.check_sent_at = None

    async def commands(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        tasks: set[asyncio.Task[None]] = set()
        while True:
            command = await queue.get()
            name = command.get("cmd")
            if name == "stop":
                return
            if name == "write":
                if self.over.is_set():
                    self.emit("write", ok=False, saw="already dead")
                    continue
                try:
                    await asyncio.wait_for(self.send(MESSAGE), CHECK_TIMEOUT)
                    self.emit("write", ok=True)
                except Exception as exc:
                    self.emit("write", ok=False, saw=type(exc).__name__)
            elif name == "stream" and self.stream_task is None:
                self.stream_task = asyncio.ensure_future(self._stream())
            elif name == "check":
                task = asyncio.ensure_future(self.check())
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    async def _stream(self) -> None:
        with contextlib.suppress(Exception):
            await self.stream_forever()


class WebsocketsSession(Session):
    def __init__(self, emit: Emit, ws: Any) -> None:
        super().__init__(emit)
        self.ws = ws

    async def send(self, message: bytes) -> None:
        await self.ws.send(message)

    async def read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self.ws:
                self.received(message if isinstance(message, bytes) else message.encode())
        except ConnectionClosed as exc:
            self.report(exc)
        else:
            self.report(None)
        self.over.set()

    def report(self, exc: Any) -> None:
        # The code we were told (received) or, when the peer said nothing, the one we sent
        # (1011 after a ping timeout); 1006 means no close frame either way. A clean close
        # ends ``async for`` without an exception: the codes are then on the connection.
        if exc is None:
            rcvd = getattr(self.ws.protocol, "close_rcvd", None)
            sent = getattr(self.ws.protocol, "close_sent", None)
            name, detail = "ConnectionClosedOK", ""
        else:
            rcvd, sent = getattr(exc, "rcvd", None), getattr(exc, "sent", None)
            name, detail = type(exc).__name__, str(exc)
        close = rcvd or sent
        code = close.code if close is not None else 1006
        self.emit(
            "closed", saw=f"{name} {code}", detail=detail, state=socket_state(self.ws.transport)
        )


async def run_websockets(spec: dict[str, Any], emit: Emit) -> int:
    from websockets.asyncio.client import connect

    uri = f"ws://{spec['host']}:{spec['port']}/"
    ws = None
    for _ in range(50):
        try:
            ws = await connect(
                uri,
                ping_interval=spec["interval"],
                ping_timeout=spec["timeout"],
                close_timeout=spec["close_timeout"],
                open_timeout=5,
                max_size=None,
            )
            break
        except OSError:
            await asyncio.sleep(0.1)
    if ws is None:
        emit("failed", why="could not connect")
        return 1
    await ws.send(b"hello")
    if await ws.recv() != b"hello":
        emit("failed", why="no hello echo")
        return 1
    emit("ready", state=socket_state(ws.transport))
    session = WebsocketsSession(emit, ws)
    reader = asyncio.ensure_future(session.read())
    await session.commands(commands_queue(asyncio.get_running_loop()))
    reader.cancel()
    with contextlib.suppress(BaseException):
        await reader
    ws.transport.abort()
    return 0


class PeerwatchSession(Session):
    def __init__(self, emit: Emit, conn: Any) -> None:
        super().__init__(emit)
        self.conn = conn

    async def send(self, message: bytes) -> None:
        await self.conn.enqueue(message)

    async def read(self) -> None:
        import peerwatch

        try:
            async for message in self.conn:
                self.received(bytes(message))
        except (peerwatch.PeerDead, peerwatch.ConnectionClosed):
            pass
        verdict = await self.conn.wait_closed()
        self.over.set()
        self.emit(
            "verdict",
            at=verdict.detected_at,
            saw=verdict.cause.value + (f" {verdict.errno}" if verdict.errno else ""),
            detail=verdict.describe(),
            silent_for=verdict.silent_for,
            local_stall=verdict.local_stall,
            state=verdict.tcp_info.state.name if verdict.tcp_info is not None else None,
            # data in flight at the verdict, and the kernel's window-probe backoff
            undelivered=len(verdict.undelivered),
            backoff=verdict.tcp_info.backoff if verdict.tcp_info is not None else None,
        )


async def dial_and_greet(spec: dict[str, Any], emit: Emit, **options: Any) -> Any:
    """A peerwatch connection to the lab's echo server, retried while the server starts
    (50 x 0.1 s), then a hello echoed; None (and a ``failed`` event) if either fails.
    ``options`` go to ``peerwatch.connect`` (``resume=True`` for the resumable client)."""
    import peerwatch

    for _ in range(50):
        try:
            conn = await peerwatch.connect(spec["host"], spec["port"], **options)
            break
        except peerwatch.PeerDead:
            await asyncio.sleep(0.1)
    else:
        emit("failed", why="could not connect")
        return None
    await conn.send(b"hello")
    if await conn.recv() != b"hello":
        emit("failed", why="no hello echo")
        return None
    return conn


async def run_peerwatch(spec: dict[str, Any], emit: Emit) -> int:

    conn = await dial_and_greet(
        spec, emit, interval=spec["interval"], timeout=spec["timeout"], policy=spec["policy"]
    )
    if conn is None:
        return 1
    emit("ready", state=socket_state(conn.transport))
    session = PeerwatchSession(emit, conn)
    reader = asyncio.ensure_future(session.read())
    await session.commands(commands_queue(asyncio.get_running_loop()))
    if not reader.done():
        reader.cancel()
    with contextlib.suppress(BaseException):
        await reader
    if conn.transport is not None:
        conn.transport.abort()
    return 0


def run_async_client(spec: dict[str, Any], emit: Emit) -> int:
    runner = run_websockets if spec["kind"] == "websockets" else run_peerwatch

    async def main() -> int:
        monitor = asyncio.ensure_future(watch_stalls(emit))
        try:
            return await runner(spec, emit)
        finally:
            monitor.cancel()

    return asyncio.run(main())
