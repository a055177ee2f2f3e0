"""The peerwatch protocol as one sans-IO object: bytes and time in, bytes, events and a timer out.

Shaped like aioquic's ``QuicConnection`` and websockets' ``Protocol``: an adapter
(asyncio today; trio, a blocking socket or a test tomorrow) feeds it what
happened and asks it what to do, and every protocol rule lives here, once:

- fed ``connection_made(now)``, ``receive_data(data, now)``, ``receive_eof(now)``,
  ``handle_timer(now)``, ``connection_lost(exc, now)``, the transport's flow
  control (``pause_writing()``, ``resume_writing()``) and the application's
  ``send(payload)``, ``consumed(size, now, count)``, ``close(reason, now)``, ``leave(...)``;
- asked ``data_to_send(budget)``, ``events_received()`` and ``get_timer()``.

It reads no clock and does no I/O: ``now`` comes from the adapter's clock, and
the one thing it needs from the kernel, a TCP_INFO snapshot to tell HUNG from
SILENT, it asks of the ``kernel`` callable the adapter hands it (``None``: no
evidence, as on a system without TCP_INFO).

Rules, in the order a connection meets them: our HELLO goes out first; the
peer's first frame must be a HELLO, and only one; no HELLO within
``handshake_timeout`` ends the connection (a PROTOCOL verdict if the peer sent
anything, HUNG or SILENT otherwise). Then: a PING is answered with its PONG
(an exactly-one-PING read takes a fast path without the decoder), beyond
``max_pings_per_interval`` it ends in GOODBYE(TOO_MANY_PINGS); a PONG counts
only for our outstanding PING (``Liveness.on_pong``); messages the application
consumed are ACKed cumulatively, once per ``data_to_send`` call; data leaves
in chunks that fit the peer's ``max_frame``; a peer that keeps talking but reads
nothing (``MAX_UNREAD_CONTROL``) is HUNG; silence past the deadline is HUNG or
SILENT; a GOODBYE, FIN or error gives the verdict. The verdict is built in
``_decide`` and nowhere else.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, NamedTuple

from peerwatch.core.config import Config
from peerwatch.core.decoder import Decoder
from peerwatch.core.delivery import Inbound, Outbound
from peerwatch.core.empty import UNUSED
from peerwatch.core.frames import (
    PING_BODY,
    PING_FRAME,
    PING_FRAME_SIZE,
    PING_HEAD,
    PONG_KIND,
    PROTOCOL_VERSION,
    Ack,
    Data,
    DataRun,
    Goodbye,
    GoodbyeCode,
    Hello,
    Ping,
    Pong,
    encode_ack,
    encode_chunk,
    encode_data_run,
    encode_goodbye,
    encode_hello,
    encode_ping,
    encode_pong,
    goodbye_name,
    printable,
)
from peerwatch.core.liveness import DEAD, PING, Liveness
from peerwatch.core.verdicts import (
    Cause,
    Verdict,
    classify_os_error,
    errno_name,
    explain_os_error,
    hung_or_silent,
)
from peerwatch.errors import LocalProtocolError, MessageTooBig, ProtocolError

if TYPE_CHECKING:
    from peerwatch.kernel.tcpinfo import TcpInfo

Role = Literal["client", "server"]

#: Control frames (PONG, ACK) written while the transport is over its high-water mark,
#: past which the peer is judged HUNG: it keeps talking but reads nothing, and each of
#: its PINGs would otherwise leave a PONG in our memory (at the highest ping rate a peer
#: may have, 100 per second, 1 MiB takes about 10 minutes).
MAX_UNREAD_CONTROL = 1024 * 1024
#: Data written per ``data_to_send`` call, in bytes and in frames (a pass of tiny
#: messages costs per frame, not per byte): one pass then holds an event loop for
#: about a millisecond, whatever the peer announced (bench/flush_budget.py).
FLUSH_BUDGET = 1024 * 1024
FLUSH_FRAMES = 1024
#: Room left in a DATA frame for its header: a chunk is at most ``max_frame - 64``.
FRAME_ROOM = 64


class Received(NamedTuple):
    """Messages from the peer, in order: one event per read, not per message (cheaper)."""

    messages: list[bytes]


class HandshakeDone(NamedTuple):
    """The peer's HELLO arrived and was accepted: the connection is ready."""

    hello: Hello


class Acked(NamedTuple):
    """The peer acknowledged every message up to ``through`` (cumulative)."""

    through: int


class HangUp(NamedTuple):
    """Close the transport now (``abort``: without flushing, the peer reads nothing)."""

    abort: bool


#: What ``events_received`` returns, in order.
Event = Received | HandshakeDone | Acked | HangUp | Verdict
KernelProbe = Callable[[], "TcpInfo | None"]


def _no_kernel() -> TcpInfo | None:
    return None


def _pong_echoing(ping: bytes | memoryview) -> bytes:
    """The PONG for a whole PING frame: its kind byte changed, seq and stamp echoed."""
    return b"".join((ping[:4], b"\x05", ping[5:]))


class Protocol:
    """One peerwatch connection's protocol state; see the module docstring for the contract."""

    __slots__ = (
        "_ack_due",
        "_acked_sent",
        "_chunk",
        "_control",
        "_decoder",
        "_events",
        "_handshake_deadline",
        "_inbound",
        "_incarnation",
        "_kernel",
        "_now",
        "_outbox",
        "_partial_offset",
        "_unread_control",
        "_wall_offset",
        "bytes_in",
        "bytes_out",
        "config",
        "failed_in_handshake",
        "liveness",
        "outbound",
        "peer_hello",
        "pings_received",
        "pings_sent",
        "reading_paused",
        "role",
        "unconsumed",
        "unconsumed_bytes",
        "verdict",
        "writing_paused",
    )

    def __init__(
        self,
        config: Config,
        role: Role,
        now: float,
        *,
        incarnation: int,
        kernel: KernelProbe = _no_kernel,
        wall_offset: float = 0.0,
    ) -> None:
        """``now`` starts the clock; ``wall_offset`` turns it into wall time for verdicts."""
        self.config = config
        self.role = role
        self._incarnation = incarnation
        self._kernel = kernel
        self._wall_offset = wall_offset
        self._now = now  # the latest time the adapter told us: when a verdict is reached
        self._decoder = Decoder(config.max_frame)
        self._inbound = Inbound(config.max_message, config.max_frame)
        self.outbound = Outbound()
        # payloads not yet fully handed out, from seq outbound.sent_through + 1 on
        self._outbox: deque[bytes] = UNUSED  # a deque from the first send
        self._partial_offset = 0
        self._control: list[bytes] = []  # frames to write before any data
        self._events: list[Event] = []
        self._chunk = config.chunk_size  # lowered at HELLO to fit the peer's max_frame
        self._ack_due = False
        self._acked_sent = 0  # highest cumulative ACK written to the peer
        self._unread_control = 0  # control bytes handed out while writing is paused
        self._handshake_deadline: float | None = None  # set by connection_made
        self.liveness = Liveness(config, now)
        self.peer_hello: Hello | None = None
        self.verdict: Verdict | None = None
        self.failed_in_handshake = False
        self.writing_paused = False
        self.reading_paused = False
        self.unconsumed = 0  # messages handed out as events and not yet consumed
        self.unconsumed_bytes = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.pings_sent = 0
        self.pings_received = 0

    # ------------------------------------------------------------------ queries

    @property
    def held_bytes(self) -> int:
        """Bytes held for the peer: unacknowledged sends, received messages not yet
        consumed, the message being reassembled and the unfinished frame."""
        return (
            self.outbound.unacked_bytes
            + self.unconsumed_bytes
            + self._inbound.partial
            + len(self._decoder.partial)
        )

    @property
    def acked_through(self) -> int:
        return self.outbound.acked_through

    @property
    def in_flight(self) -> int:
        """Messages sent and not yet acknowledged by the peer."""
        return self.outbound.in_flight

    @property
    def data_pending(self) -> bool:
        """Messages (or the rest of one) wait in the outbox for ``data_to_send``."""
        return bool(self._outbox)

    @property
    def output_pending(self) -> bool:
        """``data_to_send`` has something: control frames, an ACK due, or data."""
        return bool(self._control or self._ack_due or self._outbox)

    def has_room(self, size: int) -> bool:
        """A message of ``size`` bytes fits the send window (``send_queue``, ``send_buffer``).

        A single message larger than ``send_buffer`` fits when nothing else is
        unacknowledged, so every message can be sent. ``offer`` applies the same rule.
        """
        outbound = self.outbound
        config = self.config
        in_flight = len(outbound.unacked)  # outbound.in_flight, read once (per-message path)
        return in_flight < config.send_queue and (
            not in_flight or outbound.unacked_bytes + size <= config.send_buffer
        )

    def get_timer(self) -> float | None:
        """The next time ``handle_timer`` must run (None: never again); no side effect."""
        if self.verdict is not None or self._handshake_deadline is None:
            return None
        if self.peer_hello is None:
            return self._handshake_deadline
        return self.liveness.deadline()

    # ---------------------------------------------------------------- outputs

    def events_received(self) -> list[Event]:
        """What happened since the last call, in order: messages and the other events."""
        events = self._events
        if events:
            self._events = []
        return events

    def data_to_send(self, budget: int = FLUSH_BUDGET, frames: int = FLUSH_FRAMES) -> list[bytes]:
        """Buffers to write now, in order: control frames and a due ACK, then data.

        Data is cut into DATA frames of at most the chunk size (which fits the peer's
        ``max_frame``), at most ``budget`` bytes (over by less than one frame) and
        ``frames`` frames of it per call, grouped into buffers of about one chunk;
        ``budget=0`` gives control frames only (what an adapter writes while the
        transport is over its high-water mark). A message counts as sent
        (``sent_through``) once its last chunk was handed out.
        """
        if self._ack_due:
            self._ack_due = False
            self._write_ack()
        out: list[bytes] = []
        control = self._control
        if control:
            self._control = []
            data = control[0] if len(control) == 1 else b"".join(control)
            self.bytes_out += len(data)
            out.append(data)
            if self.writing_paused:
                self._count_unread(len(data))
        if budget > 0 and self._outbox and self.verdict is None:
            self._cut_data(out, budget, frames)
        return out

    def _cut_data(self, out: list[bytes], budget: int, frames: int) -> None:
        outbox = self._outbox
        outbound = self.outbound
        chunk = self._chunk
        seq = outbound.sent_through  # the outbox holds seq + 1, seq + 2, ...
        popleft = outbox.popleft
        while outbox and budget > 0 and frames > 0:
            if self._partial_offset or len(outbox[0]) > chunk:  # a message in chunks
                frame, self._partial_offset = encode_chunk(
                    seq + 1, outbox[0], self._partial_offset, chunk
                )
                if not self._partial_offset:
                    popleft()
                    seq += 1
                frames -= 1
            else:  # whole messages up to about one chunk: one buffer, one write
                frame, count = encode_data_run(seq + 1, outbox, chunk, frames, chunk)
                seq += count
                frames -= count
            out.append(frame)
            self.bytes_out += len(frame)
            budget -= len(frame)
        outbound.sent_through = seq

    def _count_unread(self, size: int) -> None:
        self._unread_control += size
        if self._unread_control > MAX_UNREAD_CONTROL and self.verdict is None:
            self._decide(
                Cause.HUNG,
                f"the peer application reads nothing: {self._unread_control} bytes of control"
                " frames (PONG, ACK) wait for it behind a full send buffer",
            )
            self._events.append(HangUp(abort=True))  # a GOODBYE would wait behind it all

    # ----------------------------------------------------------- from the adapter

    def connection_made(self, now: float) -> None:
        """The transport is up: our HELLO goes out, the handshake deadline starts."""
        self._now = now
        config = self.config
        self._control.append(
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
        self._handshake_deadline = now + config.handshake_timeout

    def pause_writing(self) -> None:
        """The transport is over its high-water mark: data waits, control is counted."""
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._unread_control = 0

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the peer, in any split."""
        self._now = now
        if self.verdict is not None:
            return
        self.bytes_in += len(data)
        if len(data) == PING_FRAME_SIZE and self._is_lone_ping(data, now):
            self._control.append(_pong_echoing(data))
            return
        try:
            frames = self._decoder.feed_runs(data)
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
                name = "DATA" if type(first) is DataRun else type(first).__name__.upper()
                self._violation(f"expected HELLO first, got {name}")
                return
            self._handshake(first, now)
            frames = frames[1:]
        heard = not frames  # a partial frame is life too
        inbound = self._inbound
        events = self._events
        received: list[bytes] | None = None  # the messages of this read
        try:
            for frame in frames:
                if type(frame) is DataRun:
                    heard = True
                    if received is None:  # the event goes before any verdict
                        received = []
                        events.append(Received(received))
                    inbound.on_run(frame.first_seq, frame.payloads, received)
                elif type(frame) is Data:
                    heard = True
                    message = inbound.on_data(frame)
                    if message is not None:
                        if received is None:
                            received = []
                            events.append(Received(received))
                        received.append(message)
                elif type(frame) is Pong:
                    liveness.on_pong(now, frame.seq, frame.stamp)
                else:
                    heard = True
                    if self._on_control(frame, now):
                        break
        except MessageTooBig as exc:
            self._violation(str(exc), GoodbyeCode.MESSAGE_TOO_BIG)
        except ProtocolError as exc:
            self._violation(str(exc))
        if received is not None:
            # handed out before the verdict: the application may take them
            count = len(received)
            self.unconsumed += count
            self.unconsumed_bytes += sum(map(len, received))
        else:
            count = 0
        if self._decided():  # a frame above may have reached the verdict
            return
        if heard:
            liveness.on_receive(now)
        if count and not self.reading_paused:
            config = self.config
            if self.unconsumed >= config.recv_queue or self.unconsumed_bytes >= config.recv_buffer:
                self.reading_paused = True  # the adapter stops reading; our silence, not the peer's
                liveness.pause()

    def answer_ping(self, data: bytes | memoryview, now: float) -> bytes | None:
        """The PONG to write now when ``data`` (one read) is exactly one PING; else None,
        and nothing happened: feed the read to ``receive_data`` as usual.

        The commonest read of an idle connection, answered without the decoder, the
        control queue, ``data_to_send`` and ``events_received``: at 10,000 idle
        connections going through them cost a sixth of the server's CPU. Declined
        whenever the ordinary path has something to say first (a control frame or an
        ACK waiting, writing paused, a verdict) and past the ping limit.
        """
        if (
            self._control
            or self._ack_due
            or self.writing_paused
            or self.verdict is not None
            or not self._is_lone_ping(data, now)
        ):
            return None
        self._now = now
        self.bytes_in += PING_FRAME_SIZE
        self.bytes_out += PING_FRAME_SIZE
        return _pong_echoing(data)

    def ping_due(self, now: float) -> bytes | None:
        """The PING to write now when that is all ``handle_timer(now)`` would do; else None,
        and nothing happened: call ``handle_timer`` as usual.

        With ``batch_pings`` a PING alone is the idle connection's commonest timer, and the
        general path (the control queue, ``data_to_send``, ``events_received``) cost
        about as much again as the PING itself (cProfile at 10,000 connections).
        """
        if (
            self._control
            or self._ack_due
            or self.writing_paused
            or self.verdict is not None
            or self.peer_hello is None
        ):
            return None
        sent = self.liveness.take_ping(now)  # also armed for the next deadline
        if sent is None:
            return None
        self._now = now
        self.bytes_out += PING_FRAME_SIZE  # written by the caller, not by data_to_send
        return self._counted_ping(sent)

    def take_pong(self, data: bytes | memoryview, now: float) -> bool:
        """True when ``data`` (one read) was exactly one PONG, now taken: life, and an RTT
        sample when it answers our latest PING (``Liveness.on_pong``). False: nothing
        happened; feed the read to ``receive_data`` as usual.

        With ``batch_pings`` the PONG is the idle connection's commonest read, as the
        PING is without it (``answer_ping``): the decoder's path costs several times this.
        """
        if (
            len(data) != PING_FRAME_SIZE
            or self.peer_hello is None
            or self.verdict is not None
            or self._decoder.partial
        ):
            return False
        length, kind, seq, stamp = PING_FRAME.unpack_from(data)  # no slice of the read
        if length != PING_BODY.size or kind != PONG_KIND:
            return False
        self._now = now
        self.bytes_in += PING_FRAME_SIZE
        self.liveness.on_pong(now, seq, stamp)
        return True

    def _ping(self, now: float) -> bytes:
        """Our next PING, sent at ``now``: recorded by the liveness machine and counted."""
        return self._counted_ping(self.liveness.ping_sent(now))

    def _counted_ping(self, sent: tuple[int, int]) -> bytes:
        """The PING frame for (seq, stamp) as the liveness machine recorded it, counted."""
        self.pings_sent += 1
        return encode_ping(*sent)

    def _is_lone_ping(self, data: bytes | memoryview, now: float) -> bool:
        """``data`` is one whole PING within the ping limit: counted, and life (rule 1).
        False: the decoder's path decides (it also counts and judges the excess)."""
        if (
            len(data) == PING_FRAME_SIZE
            and data[:5] == PING_HEAD
            and self.peer_hello is not None
            and not self._decoder.partial
            and self.liveness.on_ping(now)
        ):
            self.pings_received += 1
            return True
        return False

    def receive_eof(self, now: float) -> None:
        """The peer's kernel sent FIN."""
        self._now = now
        self._decide(Cause.EOF, "the peer closed its sending side without GOODBYE")

    def connection_lost(self, exc: BaseException | None, now: float) -> None:
        """The transport is gone; ``exc`` is what the adapter's socket call raised, if anything.

        The one translation of an OS (or TLS) error into a cause is ``classify_os_error``.
        """
        self._now = now
        if isinstance(exc, OSError):
            cause = classify_os_error(exc) or Cause.RESET
            self._decide(cause, f"connection lost: {explain_os_error(exc)}", exc)
        elif exc is not None:
            self._decide(Cause.RESET, f"connection lost: {exc!r}")
        else:
            self._decide(Cause.EOF, "the connection closed")
        self._handshake_deadline = None

    def handle_timer(self, now: float) -> None:
        """Run what is due at ``now``: the handshake deadline, a PING, or the death verdict."""
        self._now = now
        if self.verdict is not None or self._handshake_deadline is None:
            return
        if self.peer_hello is None:
            if now >= self._handshake_deadline:
                self._handshake_timeout(now)
            return
        liveness = self.liveness
        action = liveness.handle_timer(now)
        if action is DEAD:
            self._declare_silent(now)
            return
        if action is PING:
            self._control.append(self._ping(now))
        liveness.next_deadline()  # the deadline the adapter arms: a later run past it is a stall

    # ------------------------------------------------------- from the application

    def check_size(self, size: int) -> None:
        """Raise ``LocalProtocolError`` for a message the peer announced it would refuse."""
        peer = self.peer_hello
        if peer is not None and size > peer.max_message:
            raise LocalProtocolError(
                f"message of {size} bytes exceeds the peer's max_message ({peer.max_message})"
            )

    def send(self, payload: bytes) -> int:
        """Queue one message; returns its sequence number (the caller checked ``has_room``)."""
        return self.offer(payload, room=False)

    def offer(self, payload: bytes, room: bool = True) -> int:
        """``send`` if the message fits the send window (``has_room``), else 0, queueing
        nothing: the whole per-message send path in one call (issue 13). ``room=False``
        skips the window check (``send``). The message queued is the outbox's last: the
        messages queued are ``seq - outbound.sent_through`` once it returns ``seq``."""
        if self.verdict is not None:
            raise LocalProtocolError("send() after the verdict")
        size = len(payload)
        peer = self.peer_hello
        if peer is not None and size > peer.max_message:
            self.check_size(size)  # raises
        outbound = self.outbound
        if room:
            # has_room's rule, written out: the calls were 9 % of the instructions of
            # sending one message (callgrind); tests/core/test_offer.py holds the two to one rule
            in_flight = len(outbound.unacked)
            config = self.config
            if in_flight >= config.send_queue or (
                in_flight and outbound.unacked_bytes + size > config.send_buffer
            ):
                return 0
        # Outbound.assign, written out (one call less per message; test_offer.py holds the
        # books it leaves to assign's)
        seq = outbound.next_seq
        outbound.next_seq = seq + 1
        unacked = outbound.unacked
        if unacked is UNUSED:
            unacked = outbound.unacked = deque()
        unacked.append(payload)
        outbound.unacked_bytes += size
        outbox = self._outbox
        if outbox is UNUSED:
            outbox = self._outbox = deque()
        outbox.append(payload)
        return seq

    @property
    def queued(self) -> int:
        """Messages waiting in the outbox (not yet fully handed out)."""
        return len(self._outbox)

    def consumed(self, size: int, now: float, count: int = 1) -> None:
        """The application took ``count`` messages of ``size`` bytes in all: they are
        ACKed at the next ``data_to_send``, and reading resumes once half the receive
        window is free. An adapter may tell several at once (once per loop pass, not
        per message: the call was a measured part of the per-message cost).

        ``now`` is read only while ``reading_paused`` (the resumption restarts the
        liveness clock): an adapter may skip its clock otherwise.
        """
        self.unconsumed -= count
        self.unconsumed_bytes -= size
        self._ack_due = True
        config = self.config
        if (
            self.reading_paused
            and self.unconsumed <= config.recv_queue // 2
            and self.unconsumed_bytes <= config.recv_buffer // 2
        ):
            self.reading_paused = False
            self.liveness.resume(now)

    @property
    def consumed_before_resume(self) -> int:
        """Messages the application must still consume before reading can resume: 0 while
        reading is not paused, at least 1 while it is (the count rule of ``consumed``; the
        bytes rule may want more). An adapter that would tell ``consumed`` of every message
        taken while reading is paused may wait for this many (one call per message was
        the cost of a consumer behind a full receive window, issue 13)."""
        if not self.reading_paused:
            return 0
        return max(1, self.unconsumed - self.config.recv_queue // 2)

    def close(self, reason: str, now: float) -> None:
        """Say GOODBYE after an ACK of what was consumed; the verdict is LOCAL.

        Data still in the outbox is not sent (an adapter drains it first); the
        adapter half-closes the transport and waits for the peer to close.
        """
        self._now = now
        if self.verdict is not None:
            return
        self._write_ack()
        self._control.append(encode_goodbye(GoodbyeCode.NORMAL, reason))
        self._decide(Cause.LOCAL, f"closed by this side: {printable(reason) or 'no reason given'}")

    def leave(self, code: GoodbyeCode, reason: str, detail: str, now: float) -> None:
        """Hang up at once with GOODBYE(``code``, ``reason``); the verdict is LOCAL."""
        self._now = now
        self._leave(code, reason, Cause.LOCAL, detail)

    # ---------------------------------------------------------------- internals

    def _handshake(self, hello: Hello, now: float) -> None:
        self.peer_hello = hello
        config = self.config
        # our DATA frames must fit the peer's max_frame; the decoder refused a max_frame
        # under MIN_MAX_FRAME, so chunks stay large
        self._chunk = min(config.chunk_size, hello.max_frame - FRAME_ROOM)
        # the accepting side lets the connecting side do the pinging (liveness rule 6)
        delay = min(config.interval / 2, (config.timeout - config.interval) / 4)
        # the one machine, made with the protocol, starts again on the handshake's terms
        self.liveness.start(
            now, answer_delay=delay if self.role == "server" else 0.0, peer_interval=hello.interval
        )
        self._events.append(HandshakeDone(hello))

    def _on_control(self, frame: object, now: float) -> bool:
        """Handle a non-DATA frame; True when it ended the connection."""
        if type(frame) is Ack:
            if self.outbound.on_ack(frame.seq):
                self._events.append(Acked(frame.seq))
        elif type(frame) is Ping:
            self.pings_received += 1
            if not self.liveness.on_ping_received(now):
                self._violation(
                    "too many pings: more than"
                    f" {self.config.max_pings_per_interval} per {self.liveness.ping_window} s",
                    GoodbyeCode.TOO_MANY_PINGS,
                )
                return True
            self._control.append(encode_pong(frame.seq, frame.stamp))
        elif type(frame) is Goodbye:
            self._decide(
                Cause.GOODBYE,
                f"the peer said goodbye ({goodbye_name(frame)}):"
                f" {frame.reason or 'no reason given'}",
                goodbye=frame.reason,
            )
            self._events.append(HangUp(abort=False))
            return True
        elif type(frame) is Hello:
            self._violation("HELLO received twice")
            return True
        return False

    def _write_ack(self) -> None:
        """ACK every message the application consumed: one cumulative ACK."""
        consumed = self._inbound.received_through - self.unconsumed
        if consumed > self._acked_sent and self.verdict is None:
            self._acked_sent = consumed
            self._control.append(encode_ack(consumed))

    def _declare_silent(self, now: float) -> None:
        silent_for = self.liveness.silent_for(now)
        info = self._kernel()
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
        self._control.append(encode_goodbye(GoodbyeCode.NORMAL, f"{cause.value}: peer silent"))
        self._events.append(HangUp(abort=False))

    def _handshake_timeout(self, now: float) -> None:
        limit = self.config.handshake_timeout
        if self.bytes_in:
            self._violation(f"no valid HELLO within {limit} s")
            return
        info = self._kernel()
        self.failed_in_handshake = True
        self._decide(
            hung_or_silent(info, now - self.liveness.last_heard),
            f"no HELLO within the handshake timeout ({limit} s)",
            info=info,
        )
        self._control.append(encode_goodbye(GoodbyeCode.HANDSHAKE_TIMEOUT, "no HELLO"))
        self._events.append(HangUp(abort=False))

    def _violation(
        self,
        message: str,
        code: GoodbyeCode = GoodbyeCode.PROTOCOL_ERROR,
    ) -> None:
        """The peer broke the protocol: tell it why, end this connection only."""
        self._leave(code, message, Cause.PROTOCOL, message)

    def _leave(self, code: GoodbyeCode, reason: str, cause: Cause, detail: str) -> None:
        """End the connection from this side now: ACK what was consumed, GOODBYE, verdict."""
        if self.verdict is not None:
            return
        self._write_ack()
        self._control.append(encode_goodbye(code, reason))
        self._decide(cause, detail)
        self._events.append(HangUp(abort=False))

    def _decided(self) -> bool:
        """The verdict is in. A call, not ``self.verdict is not None``, where a method
        checked that on entry: mypy keeps the attribute narrowed to None after it, and a
        mypyc build trusts that and fails on the verdict (tools/compile_core.py)."""
        return self.verdict is not None

    def _decide(
        self,
        cause: Cause,
        detail: str,
        exc: BaseException | None = None,
        *,
        info: TcpInfo | None = None,
        goodbye: str | None = None,
    ) -> None:
        """Reach the one verdict of this connection (the only place a Verdict is built here)."""
        if self.verdict is not None:
            return
        liveness = self.liveness
        now = self._now
        partial = len(self._decoder.partial)
        if partial and cause in (Cause.EOF, Cause.RESET):
            detail += f" (mid-message: {partial} bytes of an unfinished frame discarded)"
        if info is None and cause is not Cause.LOCAL:
            info = self._kernel()
        verdict = Verdict(
            cause=cause,
            detail=detail,
            detected_at=now,
            silent_for=liveness.silent_for(now),
            errno=errno_name(exc),
            tcp_info=info,
            local_stall=liveness.local_stall,
            undelivered=self.outbound.undelivered(),
            goodbye_reason=goodbye,
            detected_wall=now + self._wall_offset,
        )
        self.verdict = verdict
        self._events.append(verdict)
