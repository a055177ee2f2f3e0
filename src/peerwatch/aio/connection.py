"""A peerwatch connection on asyncio: heartbeats, acknowledged delivery, one verdict.

The Connection is an ``asyncio.Protocol``: it only moves bytes between the
transport and the sans-IO core (decoder, delivery books, liveness machine) and
turns the core's decisions into writes, wake-ups and the final Verdict.
Timers live in the loop's shared ``TimerQueue``; a connection has no timer
handle or task of its own.

Write path: control frames (PING, PONG, ACK, GOODBYE) go straight to the
transport. Data goes through ``_outbox`` and is written in chunks only while
the transport is below its high-water mark, so a control frame never queues
behind more than about one chunk plus that mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, Literal, cast

from peerwatch.aio.timers import timer_queue
from peerwatch.core.budget import MemoryBudget
from peerwatch.core.config import Config
from peerwatch.core.decoder import Decoder
from peerwatch.core.delivery import UNUSED, Inbound, Outbound
from peerwatch.core.frames import (
    PROTOCOL_VERSION,
    Ack,
    Data,
    Goodbye,
    GoodbyeCode,
    Hello,
    Kind,
    Ping,
    Pong,
    encode_ack,
    encode_data,
    encode_goodbye,
    encode_hello,
    encode_ping,
    encode_pong,
)
from peerwatch.core.liveness import Action, Liveness
from peerwatch.core.verdicts import (
    QUIET_END,
    Cause,
    Verdict,
    classify_os_error,
    errno_name,
    hung_or_silent,
)
from peerwatch.errors import (
    ConnectionClosed,
    HandshakeFailed,
    LocalProtocolError,
    MessageTooBig,
    PeerDead,
    PeerwatchError,
    ProtocolError,
)
from peerwatch.kernel.tcpinfo import tcp_info

log = logging.getLogger("peerwatch")

#: Random per process start; a peer that sees it change knows we restarted.
INCARNATION = int.from_bytes(os.urandom(8), "big")
#: Transport buffer above which data stops being written (control frames still go).
WRITE_HIGH_WATER = 64 * 1024
#: Control frames (PONG, ACK) written while the transport is over its high-water mark,
#: past which the peer is judged HUNG: it keeps talking but reads nothing, and each of
#: its PINGs would otherwise leave a PONG in our memory (at the highest ping rate a peer
#: may have, 100 per second, 1 MiB takes about 10 minutes).
MAX_UNREAD_CONTROL = 1024 * 1024
#: Messages waiting in the outbox that make ``enqueue`` write at once, not at the next pass.
EAGER_FLUSH = 64
#: Data written per flush before yielding to other connections on the loop: in bytes,
#: and in frames (a pass of tiny messages costs per frame, not per byte). One pass
#: then holds the loop for about a millisecond, whatever the peer announced.
FLUSH_BUDGET = 1024 * 1024
FLUSH_FRAMES = 1024

Role = Literal["client", "server"]


class Delivery:
    """Handle for one enqueued message: ``await delivery`` returns once the peer has it."""

    __slots__ = ("_conn", "seq")

    def __init__(self, conn: Connection, seq: int) -> None:
        self._conn = conn
        self.seq = seq

    @property
    def acknowledged(self) -> bool:
        return self._conn._outbound.acked_through >= self.seq

    def __await__(self) -> Generator[Any, None, None]:
        return self._conn._wait_acked(self.seq).__await__()

    def __repr__(self) -> str:
        return f"<Delivery seq={self.seq} acknowledged={self.acknowledged}>"


#: Receive buffer shared by the connections of a thread: asyncio's plain ``data_received``
#: path allocates a 256 KiB bytes object per read (glibc serves it with mmap, then
#: mremap and munmap: three system calls more than the read itself).
_RECV_BUFFER = threading.local()
RECV_BUFFER_SIZE = 256 * 1024


def _recv_view() -> memoryview:
    view: memoryview | None = getattr(_RECV_BUFFER, "view", None)
    if view is None:
        view = _RECV_BUFFER.view = memoryview(bytearray(RECV_BUFFER_SIZE))
    return view


#: A whole PING frame: u32 length 12, kind PING, u32 seq, u64 stamp.
PING_FRAME_SIZE = 17
PING_HEAD = (12).to_bytes(4, "big") + bytes((Kind.PING,))


class Connection(asyncio.BufferedProtocol):
    """One peerwatch connection. Made by ``peerwatch.connect`` or handed to a ``serve`` handler."""

    __slots__ = (
        "_ack_scheduled",
        "_ack_waiters",
        "_acked_sent",
        "_budget",
        "_callbacks",
        "_charged",
        "_chunk",
        "_closed",
        "_config",
        "_decoder",
        "_flush_scheduled",
        "_handshake_deadline",
        "_inbound",
        "_inbox",
        "_inbox_bytes",
        "_incarnation",
        "_loop",
        "_outbound",
        "_outbox",
        "_partial_offset",
        "_reading_paused",
        "_ready",
        "_recv_waiter",
        "_space_waiters",
        "_timer_at",
        "_timers",
        "_transport",
        "_unread_control",
        "_write_paused",
        "bytes_in",
        "bytes_out",
        "liveness",
        "peer",
        "peer_hello",
        "peer_restarted",
        "pings_received",
        "pings_sent",
        "role",
        "verdict",
    )

    def __init__(
        self,
        config: Config,
        role: Role,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        incarnation: int | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        # a server's memory budget, told of every change in what this connection holds
        self._budget = budget
        self._charged = 0  # bytes this connection has charged to the budget
        self._config = config
        # announced in HELLO; a multi-process server passes one id for all its workers
        self._incarnation = INCARNATION if incarnation is None else incarnation
        self.role = role
        self._transport: asyncio.Transport | None = None
        self._timers = timer_queue(self._loop)
        self._timer_at: float | None = None
        self._decoder = Decoder(config.max_frame)
        self._inbound = Inbound(config.max_message)
        self._outbound = Outbound()
        self._outbox: deque[tuple[int, bytes]] = UNUSED  # a deque from the first enqueue
        self._partial_offset = 0
        self._flush_scheduled = False
        self._write_paused = False
        self._unread_control = 0  # control bytes written while _write_paused
        self._reading_paused = False
        self._inbox: deque[bytes] = UNUSED  # a deque from the first message received
        self._inbox_bytes = 0
        self._chunk = config.chunk_size  # lowered at HELLO to fit the peer's max_frame
        self._ack_scheduled = False
        self._acked_sent = 0  # highest cumulative ACK written to the peer
        self._recv_waiter: asyncio.Future[None] | None = None
        # a list, not a deque: rarely used, and an empty deque costs 760 bytes
        self._space_waiters: list[asyncio.Future[None]] = []
        self._ack_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[Verdict] = self._loop.create_future()
        self._callbacks: list[Callable[[Connection, Verdict], None]] = []
        self._handshake_deadline = 0.0
        self.liveness = Liveness(config, self._loop.time())
        self.verdict: Verdict | None = None
        self.peer_hello: Hello | None = None
        self.peer_restarted = False  # set by connect(): the server's incarnation changed
        self.peer: tuple[str, int] | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.pings_sent = 0
        self.pings_received = 0

    # ------------------------------------------------------------------ public

    @property
    def config(self) -> Config:
        return self._config

    @property
    def rtt(self) -> float | None:
        """Smoothed application-level round-trip time in seconds (from PING/PONG)."""
        return self.liveness.rtt

    @property
    def peer_incarnation(self) -> int | None:
        return self.peer_hello.incarnation if self.peer_hello else None

    @property
    def local_stall(self) -> float:
        """Longest stall of this process's own event loop seen by this connection (s)."""
        return self.liveness.local_stall

    @property
    def stalls(self) -> int:
        """How many times a stall of this process was detected (and forgiven to the peer)."""
        return self.liveness.stalls

    @property
    def in_flight(self) -> int:
        """Messages enqueued and not yet acknowledged by the peer."""
        return self._outbound.in_flight

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport

    @property
    def held_bytes(self) -> int:
        """Bytes this connection holds for its peer: unacknowledged sends, received messages
        not yet taken, the message being reassembled and the unfinished frame."""
        return (
            self._outbound.unacked_bytes
            + self._inbox_bytes
            + self._inbound.partial
            + self._decoder.buffered
        )

    def add_verdict_callback(self, callback: Callable[[Connection, Verdict], None]) -> None:
        """Call ``callback(conn, verdict)`` once, when the verdict is reached."""
        if self.verdict is not None:
            self._loop.call_soon(callback, self, self.verdict)
        else:
            self._callbacks.append(callback)

    async def enqueue(self, payload: bytes | bytearray | memoryview) -> Delivery:
        """Queue a message; waits only while the send queue is full (backpressure).

        Full means ``send_queue`` messages, or ``send_buffer`` bytes, not yet
        acknowledged by the peer; a single message larger than ``send_buffer``
        is taken when nothing else is unacknowledged, so every message can be sent.
        """
        self._raise_if_over()
        data = payload if type(payload) is bytes else bytes(payload)
        peer = self.peer_hello
        if peer is not None and len(data) > peer.max_message:
            raise LocalProtocolError(
                f"message of {len(data)} bytes exceeds the peer's max_message ({peer.max_message})"
            )
        outbound = self._outbound
        config = self._config
        while outbound.in_flight >= config.send_queue or (
            outbound.in_flight and outbound.unacked_bytes + len(data) > config.send_buffer
        ):
            waiter = self._loop.create_future()
            self._space_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                self._give_up_space(waiter)
                raise
            self._raise_if_over()
        seq = outbound.assign(data)
        budget = self._budget
        if budget is not None:  # held_bytes grew by exactly the payload
            self._charged += len(data)
            budget.charge(len(data))
            self._raise_if_over()  # over the server's budget: the message is in the verdict
        outbox = self._outbox
        if outbox is UNUSED:
            outbox = self._outbox = deque()
        outbox.append((seq, data))
        if not self._write_paused:
            if len(outbox) >= EAGER_FLUSH:
                # a caller enqueueing in a loop may not yield before the send window is
                # full: write now, so the peer reads and ACKs while we keep enqueueing
                self._flush()
            elif not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._scheduled_flush)
        return Delivery(self, seq)

    async def send(self, payload: bytes | bytearray | memoryview) -> None:
        """Send a message and return once the peer application has received it."""
        delivery = await self.enqueue(payload)
        await self._wait_acked(delivery.seq)

    async def drain(self) -> None:
        """Wait until every message enqueued so far is acknowledged."""
        await self._wait_acked(self._outbound.next_seq - 1)

    def _take(self) -> bytes:
        """The oldest message of a non-empty inbox, with the ACK and read-resume it implies."""
        inbox = self._inbox
        message = inbox.popleft()
        self._inbox_bytes -= len(message)
        budget = self._budget
        if budget is not None:  # held_bytes shrank by exactly the message
            self._charged -= len(message)
            budget.used -= len(message)
        if not self._ack_scheduled:
            self._ack_scheduled = True
            self._loop.call_soon(self._send_ack)
        if (
            self._reading_paused
            and len(inbox) <= self._config.recv_queue // 2
            and self._inbox_bytes <= self._config.recv_buffer // 2
        ):
            self._resume_reading()
        return message

    async def recv(self) -> bytes:
        """Next message from the peer. Messages already received are returned before a verdict."""
        while True:
            if self._inbox:
                return self._take()
            self._raise_if_over()
            if self._recv_waiter is not None:
                raise RuntimeError("recv() is already being awaited on this connection")
            waiter = self._recv_waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._recv_waiter = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            if self._inbox:  # no coroutine per message while messages are waiting
                yield self._take()
                continue
            try:
                yield await self.recv()
            except (PeerDead, ConnectionClosed) as exc:
                if exc.verdict.cause in QUIET_END:
                    return
                raise

    async def close(self, reason: str = "") -> Verdict:
        """Say GOODBYE after the queued data, close, and return the verdict (cause LOCAL)."""
        # the queued data goes first, in budgeted passes: a long outbox must not hold
        # the loop (the neighbours' heartbeats run in between)
        while self._outbox and self.verdict is None:
            # one pass per loop pass: the scheduled one, or ours while writing is paused
            if (self._write_paused or not self._flush_scheduled) and not self._flush(
                paused_too=True
            ):
                break
            await asyncio.sleep(0)
        if self.verdict is None:
            self._send_ack()  # what the application took is delivered: say so before leaving
            self._write(encode_goodbye(GoodbyeCode.NORMAL, reason))
            self._decide(Cause.LOCAL, f"closed by this side: {reason or 'no reason given'}")
            transport = self._transport
            if transport is not None and not transport.is_closing():
                if transport.can_write_eof():
                    # a peer that reset meanwhile makes shutdown() fail with ENOTCONN:
                    # the verdict is ours already, and the transport learns it on its own
                    with contextlib.suppress(OSError):
                        transport.write_eof()
                self._loop.call_later(self._config.close_timeout, self._abort)
        return await self.wait_closed()

    async def wait_closed(self) -> Verdict:
        """Wait for the verdict, whatever ends the connection."""
        return await asyncio.shield(self._closed)

    def __repr__(self) -> str:
        state = self.verdict.cause.value if self.verdict else "open"
        return f"<peerwatch.Connection {self.role} peer={self.peer} {state}>"

    # ------------------------------------------------------- protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements the Transport API without subclassing it
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple):
            self.peer = (str(peername[0]), int(peername[1]))
        config = self._config
        self._write(
            encode_hello(
                Hello(
                    PROTOCOL_VERSION,
                    self._incarnation,
                    config.interval,
                    config.timeout,
                    config.max_frame,
                    config.max_message,
                )
            )
        )
        now = self._loop.time()
        self._handshake_deadline = now + config.handshake_timeout
        self._timers.schedule(self, self._handshake_deadline)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _recv_view()

    def buffer_updated(self, nbytes: int) -> None:
        view = _recv_view()
        if (
            nbytes == PING_FRAME_SIZE
            and view[:5] == PING_HEAD
            and self.peer_hello is not None
            and self.verdict is None
            and not self._decoder.buffered
        ):
            # The commonest read of an idle connection: exactly one PING. Answer it
            # without the decoder, a frame tuple and a frame list; the PONG is the
            # PING with its kind byte changed (seq and stamp echoed).
            now = self._loop.time()
            self.bytes_in += nbytes
            self.pings_received += 1
            liveness = self.liveness
            if liveness.on_ping_received(now):
                pong = bytearray(view[:PING_FRAME_SIZE])
                pong[4] = Kind.PONG
                self._write(bytes(pong))
                liveness.on_receive(now)
                return
            self.pings_received -= 1
            self.bytes_in -= nbytes
            # over the rate limit: the ordinary path says GOODBYE(TOO_MANY_PINGS)
        self.data_received(bytes(view[:nbytes]))
        if self._budget is not None:
            self._account()

    def data_received(self, data: bytes) -> None:
        if self.verdict is not None:
            return
        now = self._loop.time()
        self.bytes_in += len(data)
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as exc:
            self._violation(str(exc))
            return
        liveness = self.liveness
        if self.peer_hello is None:
            liveness.on_receive(now)
            if not frames:
                return
            first = frames[0]
            if not isinstance(first, Hello):
                self._violation(f"expected HELLO first, got {type(first).__name__.upper()}")
                return
            self._handshake(first, now)
            liveness = self.liveness
            frames = frames[1:]
        got_message = False
        heard = not frames  # a partial frame is life too
        inbound = self._inbound
        inbox = self._inbox
        try:
            for frame in frames:
                if type(frame) is Data:
                    heard = True
                    message = inbound.on_data(frame)
                    if message is not None:
                        if inbox is UNUSED:
                            inbox = self._inbox = deque()
                        inbox.append(message)
                        self._inbox_bytes += len(message)
                        got_message = True
                elif type(frame) is Pong:
                    liveness.on_pong(now, frame.seq, frame.stamp)
                else:
                    heard = True
                    if self._control(frame, now):
                        return
        except MessageTooBig as exc:
            self._violation(str(exc), GoodbyeCode.MESSAGE_TOO_BIG)
            return
        except ProtocolError as exc:
            self._violation(str(exc))
            return
        if heard:
            liveness.on_receive(now)
        if got_message:
            waiter = self._recv_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            config = self._config
            if not self._reading_paused and (
                len(inbox) >= config.recv_queue or self._inbox_bytes >= config.recv_buffer
            ):
                self._pause_reading()

    def eof_received(self) -> bool:
        if self.verdict is None:
            self._decide(Cause.EOF, "the peer closed its sending side without GOODBYE")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.verdict is None:
            if isinstance(exc, OSError):
                cause = classify_os_error(exc) or Cause.RESET
                self._decide(cause, f"connection lost: {exc}", exc)
            elif exc is not None:
                self._decide(Cause.RESET, f"connection lost: {exc!r}")
            else:
                self._decide(Cause.EOF, "the connection closed")
        self._timers.cancel(self)
        if not self._closed.done():
            self._closed.set_result(self.verdict)  # type: ignore[arg-type]

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._unread_control = 0
        if self._outbox and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    # ------------------------------------------------------------------- timer

    def on_timer(self, now: float) -> float | None:
        if self.verdict is not None:
            return None
        if self.peer_hello is None:
            if now >= self._handshake_deadline:
                self._handshake_timeout(now)
                return None
            return self._handshake_deadline
        liveness = self.liveness
        stalls = liveness.stalls
        action = liveness.handle_timer(now)
        if liveness.stalls != stalls:
            log.warning(
                "this process stalled for %.3f s (event loop blocked); peer %s not blamed,"
                " its deadline restarts now",
                liveness.local_stall,
                self.peer,
            )
        if action is Action.DEAD:
            self._declare_silent(now)
            return None
        if action is Action.PING:
            seq, stamp = liveness.ping_sent(now)
            self._write(encode_ping(seq, stamp))
            self.pings_sent += 1
        return liveness.next_deadline()

    # ---------------------------------------------------------------- internals

    def _handshake(self, hello: Hello, now: float) -> None:
        self.peer_hello = hello
        # our DATA frames must fit the peer's max_frame (body = 9-byte header + chunk);
        # the decoder refused a max_frame under MIN_MAX_FRAME, so chunks stay large
        self._chunk = min(self._config.chunk_size, hello.max_frame - 64)
        config = self._config
        # the accepting side lets the connecting side do the pinging (liveness rule 6)
        delay = min(config.interval / 2, (config.timeout - config.interval) / 4)
        self.liveness = Liveness(
            config,
            now,
            answer_delay=delay if self.role == "server" else 0.0,
            peer_interval=hello.interval,
        )
        if not self._ready.done():
            self._ready.set_result(None)
        self._timers.schedule(self, self.liveness.next_deadline())

    def _control(self, frame: Any, now: float) -> bool:
        """Handle a non-DATA frame; True when it ended the connection."""
        if type(frame) is Ack:
            self._outbound.on_ack(frame.seq)
            self._wake_acked()
        elif type(frame) is Ping:
            self.pings_received += 1
            if not self.liveness.on_ping_received(now):
                self._violation(
                    "too many pings: more than"
                    f" {self._config.max_pings_per_interval} per {self.liveness.ping_window} s",
                    GoodbyeCode.TOO_MANY_PINGS,
                )
                return True
            self._write(encode_pong(frame.seq, frame.stamp))
        elif type(frame) is Goodbye:
            code = frame.code
            name = code.name if isinstance(code, GoodbyeCode) else f"code {code}"
            self._decide(
                Cause.GOODBYE,
                f"the peer said goodbye ({name}): {frame.reason or 'no reason given'}",
                goodbye=frame.reason,
            )
            self._close_transport()
            return True
        elif type(frame) is Hello:
            self._violation("HELLO received twice")
            return True
        return False

    def _send_ack(self) -> None:
        """ACK everything the application took with recv(): one cumulative ACK per loop pass."""
        self._ack_scheduled = False
        consumed = self._inbound.received_through - len(self._inbox)
        if consumed > self._acked_sent and self.verdict is None:
            self._acked_sent = consumed
            self._write(encode_ack(consumed))

    def _wake_acked(self) -> None:
        acked = self._outbound.acked_through
        waiters = self._ack_waiters
        while waiters and waiters[0][0] <= acked:
            fut = heapq.heappop(waiters)[2]
            if not fut.done():
                fut.set_result(None)
        self._wake_space()

    def _wake_space(self) -> None:
        """Wake as many senders blocked on a full send queue as there are free slots."""
        room = self._config.send_queue - self._outbound.in_flight
        space = self._space_waiters
        woken = 0
        while woken < len(space) and room > 0:
            fut = space[woken]
            woken += 1
            if not fut.done():
                fut.set_result(None)
                room -= 1
        if woken:
            del space[:woken]

    def _give_up_space(self, waiter: asyncio.Future[None]) -> None:
        """A sender blocked on a full queue was cancelled: it must not keep a slot.

        Woken and then cancelled before it ran, it was handed a free slot that no
        other sender will hear of: pass the wake-up on (issue 8, item 4). Still
        waiting, it just leaves the line.
        """
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self._wake_space()
        elif waiter in self._space_waiters:
            self._space_waiters.remove(waiter)

    async def _wait_acked(self, seq: int) -> None:
        if self._outbound.acked_through >= seq:
            return
        self._raise_if_over()
        fut: asyncio.Future[None] = self._loop.create_future()
        heapq.heappush(self._ack_waiters, (seq, id(fut), fut))
        await fut

    def _write(self, frame: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(frame)
            self.bytes_out += len(frame)
            if self._write_paused:
                self._unread_control += len(frame)
                if self._unread_control > MAX_UNREAD_CONTROL and self.verdict is None:
                    self._reads_nothing()

    def _reads_nothing(self) -> None:
        """The peer sends but does not read: HUNG, and the socket aborted, not closed
        (a GOODBYE would wait behind everything it does not read)."""
        self._decide(
            Cause.HUNG,
            f"the peer application reads nothing: {self._unread_control} bytes of control"
            " frames (PONG, ACK) wait for it behind a full send buffer",
        )
        if self._transport is not None:
            self._transport.abort()

    def _flush(self, paused_too: bool = False) -> bool:
        """Write queued data in chunks while the transport has room, one budgeted pass.

        A pass writes at most ``FLUSH_BUDGET`` bytes and ``FLUSH_FRAMES`` frames,
        then yields the loop to other connections. ``paused_too`` (close) writes
        past the transport's high-water mark. Returns False when nothing can be
        written any more (transport gone or verdict reached).
        """
        transport = self._transport
        if transport is None or transport.is_closing() or self.verdict is not None:
            return False
        outbox = self._outbox
        outbound = self._outbound
        chunk = self._chunk
        budget = FLUSH_BUDGET
        frames_left = FLUSH_FRAMES
        while outbox and budget > 0 and frames_left > 0 and (paused_too or not self._write_paused):
            parts: list[bytes] = []
            size = 0
            while outbox and size < chunk and len(parts) < frames_left:
                seq, payload = outbox[0]
                offset = self._partial_offset
                if offset == 0 and len(payload) <= chunk:
                    frame = encode_data(seq, payload)
                    outbox.popleft()
                    outbound.sent_through = seq
                else:
                    end = offset + chunk
                    more = end < len(payload)
                    frame = encode_data(seq, payload[offset:end], more)
                    if more:
                        self._partial_offset = end
                    else:
                        self._partial_offset = 0
                        outbox.popleft()
                        outbound.sent_through = seq
                parts.append(frame)
                size += len(frame)
            data = b"".join(parts)
            transport.write(data)
            self.bytes_out += size
            budget -= size
            frames_left -= len(parts)
        if outbox and not self._write_paused and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)
        return True

    def _scheduled_flush(self) -> None:
        # only this callback clears the flag: at most one pass is pending at a time
        self._flush_scheduled = False
        self._flush()

    def _pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()
        self._reading_paused = True
        self.liveness.pause()

    def _resume_reading(self) -> None:
        self._reading_paused = False
        self.liveness.resume(self._loop.time())
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def _account(self) -> None:
        """Tell the server's budget how much more or less this connection holds now.

        Called after each read (which may change every part of ``held_bytes``);
        ``enqueue`` and ``recv`` charge their exact change without recounting.
        The budget may end this or another connection on the spot.
        """
        held = self.held_bytes
        delta = held - self._charged
        if delta and self._budget is not None:
            self._charged = held
            self._budget.charge(delta)

    def _raise_if_over(self) -> None:
        verdict = self.verdict
        if verdict is None:
            return
        if verdict.cause is Cause.LOCAL:
            raise ConnectionClosed(verdict)
        raise PeerDead(verdict)

    def _declare_silent(self, now: float) -> None:
        liveness = self.liveness
        silent_for = liveness.silent_for(now)
        info = self._tcp_info()
        cause = hung_or_silent(info, silent_for)
        if cause is Cause.HUNG:
            detail = (
                f"nothing from the peer application for {silent_for:.3f} s,"
                " but its kernel still acknowledges our bytes: the peer process is stuck"
            )
        else:
            detail = f"nothing from the peer for {silent_for:.3f} s, not even TCP acknowledgements"
            if info is not None:
                detail += f" ({info.retransmits} retransmissions, {info.unacked} unacked segments)"
        self._decide(cause, detail, info=info)
        self._write(encode_goodbye(GoodbyeCode.NORMAL, f"{cause.value}: peer silent"))
        self._close_transport()

    def _handshake_timeout(self, now: float) -> None:
        if self.bytes_in:
            self._violation(f"no valid HELLO within {self._config.handshake_timeout} s")
            return
        info = self._tcp_info()
        cause = hung_or_silent(info, now - self.liveness.last_heard)
        self._decide(
            cause,
            f"no HELLO within the handshake timeout ({self._config.handshake_timeout} s)",
            info=info,
            handshake=True,
        )
        self._write(encode_goodbye(GoodbyeCode.HANDSHAKE_TIMEOUT, "no HELLO"))
        self._close_transport()

    def _violation(self, message: str, code: GoodbyeCode = GoodbyeCode.PROTOCOL_ERROR) -> None:
        """The peer broke the protocol: tell it why, end this connection only."""
        self._leave(code, message, Cause.PROTOCOL, message)

    def _leave(self, code: GoodbyeCode, reason: str, cause: Cause, detail: str) -> None:
        """End the connection from this side now: ACK what was taken, GOODBYE, verdict, close.

        The one way this side hangs up without waiting (server shutdown, refusal,
        a protocol violation); ``close()`` is the patient way, after queued data.
        """
        if self.verdict is not None:
            return
        self._send_ack()
        self._write(encode_goodbye(code, reason))
        self._decide(cause, detail)
        self._close_transport()

    def leave(self, code: GoodbyeCode, reason: str, detail: str) -> None:
        """Hang up at once with GOODBYE(``code``, ``reason``); the verdict is LOCAL."""
        self._leave(code, reason, Cause.LOCAL, detail)

    def _tcp_info(self) -> Any:
        transport = self._transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        return tcp_info(sock) if sock is not None else None

    def _decide(
        self,
        cause: Cause,
        detail: str,
        exc: BaseException | None = None,
        *,
        info: Any = None,
        goodbye: str | None = None,
        handshake: bool = False,
    ) -> None:
        """Reach the one verdict of this connection and fail everything waiting on it."""
        if self.verdict is not None:
            return
        now = self._loop.time()
        liveness = self.liveness
        partial = self._decoder.buffered
        if partial and cause in (Cause.EOF, Cause.RESET):
            detail += f" (mid-message: {partial} bytes of an unfinished frame discarded)"
        if info is None and cause is not Cause.LOCAL:
            info = self._tcp_info()
        verdict = Verdict(
            cause=cause,
            detail=detail,
            detected_at=now,
            silent_for=liveness.silent_for(now),
            errno=errno_name(exc),
            tcp_info=info,
            local_stall=liveness.local_stall,
            undelivered=self._outbound.undelivered(),
            goodbye_reason=goodbye,
        )
        self.verdict = verdict
        self._timers.cancel(self)
        budget = self._budget
        if budget is not None:  # nothing more is read or sent for the peer: refund it all
            self._budget = None
            budget.charge(-self._charged)
            self._charged = 0
        error: PeerwatchError
        if cause is Cause.LOCAL:
            error = ConnectionClosed(verdict)
        elif handshake:
            error = HandshakeFailed(verdict)
        else:
            error = PeerDead(verdict)
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # retrieved: nobody may be waiting for the handshake
        for waiter in (*self._space_waiters, *(w[2] for w in self._ack_waiters)):
            if not waiter.done():
                waiter.set_exception(error)
        self._space_waiters.clear()
        self._ack_waiters.clear()
        if self._recv_waiter is not None and not self._recv_waiter.done():
            self._recv_waiter.set_result(None)  # recv() re-checks and raises
        for callback in self._callbacks:
            try:
                callback(self, verdict)
            except Exception:
                log.exception("verdict callback %r failed", callback)
        self._callbacks.clear()
        if cause is not Cause.LOCAL:
            log.info("peer %s: %s", self.peer, verdict.describe())

    def _close_transport(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()
            self._loop.call_later(self._config.close_timeout, self._abort)

    def _abort(self) -> None:
        transport = self._transport
        if transport is not None and not self._closed.done():
            transport.abort()
