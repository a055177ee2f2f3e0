"""A peerwatch connection on asyncio: the transport, the timer, waiters and raising on the verdict.

Every protocol rule lives in the sans-IO ``core.protocol.Protocol``: this ``BufferedProtocol``
feeds it bytes and the loop's time, writes what it hands out and turns its events into
wake-ups and the verdict's exception; timers live in the loop's shared ``TimerQueue``.
Control frames go out at once; data and ACKs in budgeted passes, one per loop pass, data
only below the transport's high-water mark (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol as Interface
from typing import cast

from peerwatch.aio.handles import Delivery, Read
from peerwatch.aio.sockets import half_close, recv_view, transport_tcp_info
from peerwatch.aio.timers import timer_queue
from peerwatch.aio.waiters import Waiters, error_for
from peerwatch.core.budget import MemoryBudget, Share
from peerwatch.core.config import Config
from peerwatch.core.empty import UNUSED
from peerwatch.core.frames import PING_FRAME_SIZE, PONG_KIND, GoodbyeCode, Hello
from peerwatch.core.liveness import Liveness
from peerwatch.core.protocol import (
    FLUSH_BUDGET,
    FLUSH_FRAMES,
    Acked,
    HandshakeDone,
    HangUp,
    Protocol,
    Received,
    Role,
)
from peerwatch.core.verdicts import QUIET_END, Cause, Verdict
from peerwatch.errors import ConnectionClosed, PeerDead, QueueFull
from peerwatch.kernel.tcpinfo import TcpInfo

log = logging.getLogger("peerwatch")

#: Random per process start; a peer that sees it change knows we restarted.
INCARNATION = int.from_bytes(os.urandom(8), "big")
#: Transport buffer above which data stops being written (control frames still go).
WRITE_HIGH_WATER = 64 * 1024
#: Messages waiting in the outbox that make ``enqueue`` write at once, not at the next pass.
EAGER_FLUSH = 256
#: Messages taken by the application that make ``recv`` ACK at once, not at the next pass:
#: a consumer working through a long read would otherwise ACK only at its end, and a peer
#: with a full send window (1,024 messages by default) waits idle meanwhile.
EAGER_ACK = 256


class Holder(Interface):
    """What holds a connection and must hear of its life (a server): one back-reference per
    connection instead of a closure per event (about 0.6 KiB per connection, tracemalloc)."""

    def handshake_ended(self, conn: Connection, ok: bool) -> None:
        """Called soon (next loop pass) after the HELLO exchange or a verdict ends it."""

    def verdict_reached(self, conn: Connection) -> None:
        """Called at once when the verdict is in (after the connection's own callbacks)."""

    def socket_closed(self, conn: Connection) -> None:
        """Called at once when the transport is gone."""


#: ``set_message_callback``'s callback: ``callback(conn, message)``.
MessageCallback = Callable[["Connection", bytes], None]


class Connection(asyncio.BufferedProtocol):
    """One peerwatch connection. Made by ``peerwatch.connect`` or handed to a ``serve`` handler."""

    __slots__ = (
        "_config", "_flush_scheduled", "_holder", "_inbox", "_loop", "_protocol",
        "_reading_paused", "_receiver", "_resume_after", "_share", "_taken", "_taken_bytes",
        "_timer_at",
        "_timer_clock", "_timers", "_transport", "_view", "_waiters", "peer", "peer_restarted",
        "role",
    )  # fmt: skip

    def __init__(
        self,
        config: Config,
        role: Role,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        incarnation: int | None = None,
        budget: MemoryBudget | None = None,
        holder: Holder | None = None,
    ) -> None:
        self._loop = loop = loop or asyncio.get_running_loop()
        self._holder = holder
        now, wall = loop.time(), time.time()
        # announced in HELLO; a multi-process server passes one id for all its workers
        ident = INCARNATION if incarnation is None else incarnation
        # the kernel's evidence (TCP_INFO) tells HUNG from SILENT
        self._protocol = Protocol(
            config, role, now, incarnation=ident, kernel=self._tcp_info, wall_offset=wall - now
        )
        self._config = config
        self.role = role
        # this connection's part of a server's memory budget, told of every change
        self._share = Share(budget)
        self._transport: asyncio.Transport | None = None
        self._timers = timer_queue(loop)
        self._timer_at: float | None = None
        # the liveness machine's deadline, read by the queue, once the handshake is done
        self._timer_clock: Liveness | None = None
        self._flush_scheduled = False
        self._reading_paused = False
        self._resume_after = 0  # messages to take before reading may resume (while paused)
        self._inbox: deque[bytes] = UNUSED  # a deque from the first message received
        self._receiver: MessageCallback | None = None  # set_message_callback's
        self._taken = self._taken_bytes = 0  # messages taken, not yet told to the protocol
        self._waiters = Waiters(loop)
        self._view = recv_view()  # the receive buffer shared by this thread's connections
        self.peer_restarted = False  # set by connect(): the server's incarnation changed
        self.peer: tuple[str, int] | None = None

    config: Read[Config] = Read("_config")
    holder: Read[Holder | None] = Read("_holder")  # the server that hears of its life, if any
    transport: Read[asyncio.Transport | None] = Read("_transport")
    ready: Read[asyncio.Future[None]] = Read("_waiters.ready")  # the handshake's outcome
    closed: Read[asyncio.Future[Verdict]] = Read("_waiters.closed")  # done: the socket is
    verdict: Read[Verdict | None] = Read("_protocol.verdict")
    peer_hello: Read[Hello | None] = Read("_protocol.peer_hello")
    liveness: Read[Liveness] = Read("_protocol.liveness")
    bytes_in: Read[int] = Read("_protocol.bytes_in")
    bytes_out: Read[int] = Read("_protocol.bytes_out")
    pings_sent: Read[int] = Read("_protocol.pings_sent")
    pings_received: Read[int] = Read("_protocol.pings_received")
    in_flight: Read[int] = Read("_protocol.in_flight")  # enqueued, not yet acknowledged
    acked_through: Read[int] = Read("_protocol.acked_through")
    rtt: Read[float | None] = Read("_protocol.liveness.rtt")  # smoothed, from PING/PONG (s)
    local_stall: Read[float] = Read("_protocol.liveness.local_stall")  # our longest stall (s)
    stalls: Read[int] = Read("_protocol.liveness.stalls")  # our stalls, forgiven to the peer

    @property
    def held_bytes(self) -> int:  # what the server's budget counts
        return self._protocol.held_bytes - self._taken_bytes

    @property
    def peer_incarnation(self) -> int | None:
        return hello.incarnation if (hello := self._protocol.peer_hello) is not None else None

    def add_verdict_callback(self, callback: Callable[[Connection, Verdict], None]) -> None:
        """Call ``callback(conn, verdict)`` once, when the verdict is reached."""
        if (verdict := self._protocol.verdict) is not None:
            self._loop.call_soon(callback, self, verdict)
        else:
            self._waiters.add_callback(callback)  # called with this connection: no partial

    def set_message_callback(self, callback: MessageCallback | None) -> None:
        """Hand every message to ``callback(conn, message)`` as it arrives, in order, instead of
        keeping it for ``recv``; messages already waiting go first (in the next loop pass).
        ``None`` goes back to ``recv``.

        The callback style of a server with a plain-function handler (``serve``): no task
        and no coroutine per connection, which were about 1.5 KiB of each idle connection's
        memory (bench/mem_per_conn.py). One function can serve every connection, as the
        connection comes with each call. A message counts as taken once the callback has it
        (its ACK follows; the receive window opens again). A callback that raises ends this
        connection with GOODBYE(GOING_AWAY), as a failing handler does; others are untouched.
        """
        self._receiver = callback
        if callback is not None and self._inbox:
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        """Hand the waiting messages to the message callback, while it stays the same."""
        receiver, inbox = self._receiver, self._inbox
        while inbox and receiver is not None and self._receiver is receiver:
            message = self._take()
            try:
                receiver(self, message)
            except Exception:
                log.exception("message callback failed for %s", self.peer)
                self._receiver = None
                if self._protocol.verdict is None:
                    self.leave(GoodbyeCode.GOING_AWAY, "handler finished", "handler failed")
                return

    async def enqueue(self, payload: bytes | bytearray | memoryview) -> Delivery:
        """Queue a message; waits only while the send queue is full (backpressure): see
        ``Protocol.has_room`` (``send_queue`` messages or ``send_buffer`` bytes unACKed)."""
        try:
            return Delivery(self, self.enqueue_nowait(payload))
        except QueueFull:  # wait for room (a try costs nothing while nothing is raised)
            pass
        data = payload if type(payload) is bytes else bytes(payload)
        while True:
            await self._waiters.space()
            self._raise_if_over()
            if seq := self._protocol.offer(data):
                self._queued(len(data), seq)
                return Delivery(self, seq)

    def enqueue_nowait(self, payload: bytes | bytearray | memoryview) -> int:
        """Queue a message without waiting; return its sequence number (``wait_acked(seq)``
        waits for its acknowledgement). Raises ``QueueFull`` at once, queueing nothing,
        where ``await enqueue`` would wait for room (the same rule, ``Protocol.has_room``).

        The fire-and-forget path: no coroutine and no ``Delivery`` per message, which were
        about a third of the sending side's instructions per message (bench/tp_enqueue.py).
        """
        protocol = self._protocol
        if protocol.verdict is not None:
            self._raise_if_over()
        data = payload if type(payload) is bytes else bytes(payload)
        seq = protocol.offer(data)
        if not seq:
            raise QueueFull(
                f"send queue full: {protocol.in_flight} messages unacknowledged"
                f" (send_queue {self._config.send_queue}, send_buffer"
                f" {self._config.send_buffer} bytes)"
            )
        if (
            self._flush_scheduled
            and self._share.budget is None
            and seq - protocol.outbound.sent_through < EAGER_FLUSH
        ):
            # _queued's cases, the commonest written out: a pass is coming and no budget
            # counts (one call less per message: 8 % of its instructions, callgrind)
            return seq
        self._queued(len(data), seq)
        return seq

    def _queued(self, size: int, seq: int) -> None:
        """After ``Protocol.offer`` queued message ``seq`` of ``size`` bytes: count it in a
        server's budget and see that it gets written."""
        share = self._share
        if share.budget is not None:  # a server's connection: held_bytes grew by the payload
            share.grow(size)
            self._raise_if_over()  # over the budget: the message is in the verdict
        protocol = self._protocol
        if not protocol.writing_paused:
            if seq - protocol.outbound.sent_through >= EAGER_FLUSH:  # queued, not yet written
                # a caller enqueueing in a loop may not yield before the send window is
                # full: write now, so the peer reads and ACKs while we keep enqueueing
                self._flush()
            elif not self._flush_scheduled:
                self._schedule_flush()

    async def send(self, payload: bytes | bytearray | memoryview) -> None:
        """Send a message and return once the peer application has received it."""
        delivery = await self.enqueue(payload)
        await self.wait_acked(delivery.seq)

    async def drain(self) -> None:
        """Wait until every message enqueued so far is acknowledged."""
        await self.wait_acked(self._protocol.outbound.next_seq - 1)

    async def wait_acked(self, seq: int) -> None:
        """Wait until the peer acknowledged message ``seq`` (and so all before it)."""
        if self._protocol.acked_through >= seq:
            return
        self._raise_if_over()
        await self._waiters.acked(seq)

    def _take(self) -> bytes:
        """The oldest message of a non-empty inbox, told to the protocol at the next pass."""
        message = self._inbox.popleft()
        self._taken += 1
        self._taken_bytes += len(message)
        if self._taken >= EAGER_ACK:
            self._flush()  # tells the protocol, writes the ACK
        elif not self._flush_scheduled:  # one cumulative ACK per loop pass
            self._schedule_flush()
        if self._reading_paused and self._taken >= self._resume_after:
            # the protocol says when reading resumes: tell it now
            self._tell_taken()
            self._follow_reading()
        return message

    def _tell_taken(self) -> None:
        """Tell the protocol and the budget what was taken since: once per loop pass, not per
        message (two calls per message were ~10 % of receiving one, measured)."""
        if self._taken:
            protocol = self._protocol  # the clock is read only when reading may resume
            now = self._loop.time() if protocol.reading_paused else 0.0
            protocol.consumed(self._taken_bytes, now, self._taken)
            self._share.shrink(self._taken_bytes)  # held_bytes shrank by exactly that
            self._taken = self._taken_bytes = 0
            self._resume_after = protocol.consumed_before_resume

    async def recv(self) -> bytes:
        """Next message from the peer. Messages already received are returned before a verdict."""
        while True:
            if self._inbox:
                return self._take()
            self._raise_if_over()
            await self._waiters.message()

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
        protocol = self._protocol
        # the queued data first, one budgeted pass per loop pass (the scheduled one, or
        # ours while writing is paused): the neighbours' heartbeats run in between
        while protocol.data_pending and protocol.verdict is None:
            mine = self._protocol.writing_paused or not self._flush_scheduled
            if mine and not self._flush(paused_too=True):
                break
            await asyncio.sleep(0)
        if protocol.verdict is None:
            self._tell_taken()  # the last ACK before GOODBYE covers them
            protocol.close(reason, self._loop.time())
            self._pump()
            transport = self._transport
            if transport is not None and not transport.is_closing():
                half_close(transport)
                self._loop.call_later(self._config.close_timeout, self._abort)
        return await self.wait_closed()

    def leave(self, code: GoodbyeCode, reason: str, detail: str) -> None:
        """Hang up at once with GOODBYE(``code``, ``reason``); the verdict is LOCAL."""
        self._tell_taken()
        self._protocol.leave(code, reason, detail, self._loop.time())
        self._pump()

    async def wait_closed(self) -> Verdict:
        """Wait for the verdict, whatever ends the connection: once the socket is closed, or,
        when the peer is dead (every cause but LOCAL), as soon as the verdict is decided."""
        return await self._waiters.end()

    def __repr__(self) -> str:
        state = verdict.cause.value if (verdict := self._protocol.verdict) else "open"
        return f"<peerwatch.Connection {self.role} peer={self.peer} {state}>"

    # ------------------------------------------------------- transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements the Transport API without subclassing it
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple):
            # IPv4's (host, port) is the transport's own tuple, not a copy (56 bytes of an
            # idle connection); IPv6's 4-tuple is cut to (host, port)
            self.peer = peername if len(peername) == 2 else (str(peername[0]), int(peername[1]))
        self._protocol.connection_made(self._loop.time())
        self._pump()
        self._arm()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        if self._taken:  # the receive window counts only what is not taken
            self._tell_taken()
        view = self._view
        if nbytes == PING_FRAME_SIZE:  # an idle connection's commonest reads: PING, PONG
            data = view[:nbytes]
            if data[4] == PONG_KIND:  # batch_pings' commonest
                if self._protocol.take_pong(data, self._loop.time()):
                    return
            else:
                pong = self._protocol.answer_ping(data, self._loop.time())
                if pong is not None:
                    cast(asyncio.Transport, self._transport).write(pong)
                    return
        self._protocol.receive_data(bytes(view[:nbytes]), self._loop.time())
        self._pump()
        if self._share.budget is not None:  # a read may change every part of held_bytes
            self._share.settle(self._protocol.held_bytes)

    def eof_received(self) -> bool:
        self._protocol.receive_eof(self._loop.time())
        self._pump()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.connection_lost(exc, self._loop.time())
        self._pump()
        self._timers.cancel(self)
        self._waiters.transport_gone(self._protocol.verdict)  # type: ignore[arg-type]
        if self._holder is not None:
            self._holder.socket_closed(self)

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()
        if self._protocol.data_pending:
            self._schedule_flush()

    def on_timer(self, now: float) -> float | None:
        """The shared TimerQueue's call: run the protocol's timer, return its next deadline."""
        if self._taken:
            self._tell_taken()  # a verdict's GOODBYE ACKs what was taken
        protocol = self._protocol
        transport = self._transport
        if transport is not None and not transport.is_closing():
            ping = protocol.ping_due(now)  # batch_pings' commonest timer: a PING alone
            if ping is not None:
                transport.write(ping)
                return protocol.liveness.due  # get_timer()'s answer, with no verdict
        stalls = protocol.liveness.stalls
        protocol.handle_timer(now)
        if protocol.liveness.stalls != stalls:
            stall = protocol.liveness.local_stall
            log.warning("this process stalled for %.3f s (event loop blocked); peer %s not"
                        " blamed, its deadline restarts now", stall, self.peer)  # fmt: skip
        self._pump()
        return protocol.get_timer()

    # ---------------------------------------------------------------- internals

    def _arm(self) -> None:
        deadline = self._protocol.get_timer()
        if deadline is not None:
            self._timers.schedule(self, deadline)

    def _pump(self) -> None:
        """Write the control frames the protocol has, then act on its events, in order."""
        transport = self._transport
        protocol = self._protocol
        # a verdict of the timer pass writes its GOODBYE with the close (``_hang_up``)
        deferred = protocol.verdict is not None and self._timers.in_pass
        if transport is not None and not transport.is_closing() and not deferred:
            for data in protocol.data_to_send(0):
                transport.write(data)
        inbox = self._inbox
        got_message = False
        for event in protocol.events_received():
            if type(event) is Received:
                if inbox is UNUSED:
                    inbox = self._inbox = deque()
                inbox.extend(event.messages)
                got_message = True
                if self._receiver is not None:
                    self._deliver()  # before the events behind it (a verdict) are told
            elif type(event) is Acked:
                room = self._config.send_queue - protocol.in_flight
                self._waiters.acked_through(event.through, room)
            elif type(event) is HandshakeDone:
                self._waiters.handshake_done()
                if self._holder is not None:
                    self._loop.call_soon(self._holder.handshake_ended, self, True)
                self._timer_clock = protocol.liveness
                self._arm()
            elif type(event) is HangUp:
                self._hang_up(event.abort)
            else:
                self._on_verdict(cast(Verdict, event))
        if got_message:
            self._waiters.message_arrived()
            self._follow_reading()

    def _follow_reading(self) -> None:
        """Pause or resume reading the socket as the protocol's receive window says."""
        paused = self._protocol.reading_paused
        transport = self._transport
        if paused != self._reading_paused and transport is not None:
            self._reading_paused = paused
            if not transport.is_closing():
                transport.pause_reading() if paused else transport.resume_reading()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        # only this callback clears the flag: at most one pass is pending at a time
        self._flush_scheduled = False
        self._flush()

    def _flush(self, paused_too: bool = False) -> bool:
        """Write one budgeted pass of what the protocol has (ACK, control, data).

        ``paused_too`` (close) writes data past the transport's high-water mark.
        Returns False when nothing can be written any more (transport gone or verdict).
        """
        self._tell_taken()  # before the pass's ACK
        transport = self._transport
        protocol = self._protocol
        if transport is None or transport.is_closing() or protocol.verdict is not None:
            return False
        budget = FLUSH_BUDGET if paused_too or not protocol.writing_paused else 0
        for data in protocol.data_to_send(budget, FLUSH_FRAMES):
            transport.write(data)
        self._pump()  # a write past the unread-control bound may have reached a verdict
        if protocol.data_pending and not protocol.writing_paused and protocol.verdict is None:
            self._schedule_flush()
        return True

    def _raise_if_over(self) -> None:
        if (verdict := self._protocol.verdict) is not None:
            raise error_for(verdict, self._protocol.failed_in_handshake)

    def _tcp_info(self) -> TcpInfo | None:
        return transport_tcp_info(self._transport)

    def _on_verdict(self, verdict: Verdict) -> None:
        """The protocol reached its verdict: fail everything waiting, refund, tell callbacks."""
        self._timers.cancel(self)
        self._share.refund()  # nothing more is read or sent for the peer
        waiters, holder = self._waiters, self._holder
        in_handshake = waiters.in_handshake
        failed_in_handshake = self._protocol.failed_in_handshake
        waiters.fail(functools.partial(error_for, verdict, failed_in_handshake), verdict, self)
        if verdict.cause is not Cause.LOCAL:
            waiters.peer_dead(verdict)  # wait_closed returns now, not after the close
        if holder is not None:
            if in_handshake:
                self._loop.call_soon(holder.handshake_ended, self, False)
            holder.verdict_reached(self)
        if verdict.cause is not Cause.LOCAL and log.isEnabledFor(logging.INFO):
            log.info("peer %s: %s", self.peer, verdict.describe())

    def _hang_up(self, abort: bool) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if self._timers.in_pass:
                # a verdict of the timer pass (silence, no HELLO): decided and told now,
                # its GOODBYE written and the transport closed after the pass, behind every
                # wake-up the pass caused. In a burst of 1,000 verdicts the write and the
                # close (epoll unregister, the socket's close a loop pass later) would
                # delay every later verdict and wake-up (issue 13, bench/verdict_burst.py)
                self._timers.after_pass(functools.partial(self._close_transport, abort))
            else:
                self._close_transport(abort)

    def _close_transport(self, abort: bool) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            for data in self._protocol.data_to_send(0):  # what a deferred hang-up held back
                transport.write(data)
            if abort:
                transport.abort()
                return
            transport.close()
            if transport.get_write_buffer_size() or transport.get_extra_info("ssl_object"):
                # a close that waits for buffered bytes (or TLS's close_notify) is bounded;
                # with nothing buffered the transport is gone in the next loop pass, and a
                # timer for each of a burst of verdicts would only sit in the loop's heap
                self._loop.call_later(self._config.close_timeout, self._abort)

    def _abort(self) -> None:
        if self._transport is not None and not self._waiters.is_gone:
            self._transport.abort()
