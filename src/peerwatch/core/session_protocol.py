"""One connection that carries a session: ``Protocol``'s rules plus docs/PROTOCOL.md section 8.

Sans-IO like its parent: bytes and time in, bytes, events and a timer out. The
session (``core.session.Session``) outlives this object; each new connection
gets a new ``SessionProtocol`` with the same session. What this adds:

- HELLO carries FLAG_SESSION, the session id and token. The client sends its
  HELLO and RESUME at once. The server sends nothing until the client's HELLO:
  a plain one is refused by name (a plain HELLO, then GOODBYE(PROTOCOL_ERROR));
  a session one raises ``SessionRequest`` and waits for the adapter's store
  lookup: ``accept_session`` (HELLO with the session's id and token, RESUME) or
  ``refuse`` (HELLO with the all-zero id and token, then GOODBYE with the code).
  A client that reads an all-zero id in the server's HELLO expects that GOODBYE.
- RESUME comes right after each HELLO; DATA or ACK before it is refused. On the
  peer's RESUME the session replays its tail first (``Attached`` says how much)
  or, if the numbers contradict the books, is lost (GOODBYE(SESSION_LOST)).
- DATA seqs are session seqs and must go on from the session's
  ``received_through``; messages go to the session's inbox (which outlives the
  connection) and ``Received`` only tells how many arrived. ACKs are cumulative
  session seqs: the one we send is ``session.ack_due()``, the ones we get
  release the replay buffer.
- GOODBYE(NORMAL) ends the session in agreement, GOODBYE(SESSION_LOST) and
  GOODBYE(SESSION_UNKNOWN) end it lost (``SessionEnded``); any other end of the
  connection only detaches it. So this side's "peer silent" GOODBYE says
  GOING_AWAY here, not NORMAL.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from peerwatch.core.config import Config
from peerwatch.core.decoder import Decoder
from peerwatch.core.delivery import Inbound
from peerwatch.core.empty import UNUSED
from peerwatch.core.frames import (
    FLAG_SESSION,
    NO_SESSION_ID,
    NO_TOKEN,
    PROTOCOL_VERSION,
    Ack,
    Data,
    Goodbye,
    GoodbyeCode,
    Hello,
    Resume,
    encode_ack,
    encode_goodbye,
    encode_hello,
    encode_resume,
)
from peerwatch.core.protocol import (
    FLUSH_BUDGET,
    FLUSH_FRAMES,
    Acked,
    Event,
    KernelProbe,
    Protocol,
    Role,
    _no_kernel,
)
from peerwatch.core.session import (
    NOT_A_SESSION_CLIENT,
    NOT_A_SESSION_SERVER,
    Session,
    SessionLost,
    State,
)
from peerwatch.core.verdicts import Cause
from peerwatch.errors import LocalProtocolError, RemoteProtocolError


class SessionRequest(NamedTuple):
    """Server: the client's session HELLO arrived; look it up, then accept or refuse."""

    session_id: bytes  # all zero: the client asks for a new session
    token: bytes


class Attached(NamedTuple):
    """Both RESUMEs are exchanged: messages flow; ``replayed`` of ours are written again."""

    replayed: int


class SessionEnded(NamedTuple):
    """The session is over: ``lost`` says why, None when both sides agreed (GOODBYE NORMAL)."""

    lost: SessionLost | None


SessionEvent = SessionRequest | Attached | SessionEnded
#: What ``SessionProtocol.events_received`` returns, in order.
AnyEvent = Event | SessionEvent


class SessionInbound(Inbound):
    """Reassembly as for a plain connection, then the message goes to the session's inbox."""

    __slots__ = ("session",)

    def __init__(self, max_message: int) -> None:
        super().__init__(max_message)
        self.session: Session | None = None

    def _attached(self) -> Session:
        session = self.session
        if session is None or session.state is not State.ATTACHED:
            state = "not yet known" if session is None else session.state.value
            raise RemoteProtocolError(f"DATA while the session is {state} (RESUME comes first)")
        return session

    def on_data(self, frame: Data) -> bytes | None:
        session = self._attached()
        message = super().on_data(frame)
        if message is not None:
            session.on_message(frame.seq, message)
        return message

    def on_run(self, first_seq: int, payloads: list[bytes], into: list[bytes]) -> None:
        """As ``Inbound.on_run`` (the batched path), each completed message into the session.

        The messages it completes are ``into[start:]``, consecutive and ending at
        ``expected_seq - 1``, also when it stops at a refused one."""
        session = self._attached()
        start = len(into)
        try:
            super().on_run(first_seq, payloads, into)
        finally:
            done = len(into) - start
            if done:  # one call per read, not per message (issue 12)
                session.on_run(self.expected_seq - done, into[start:] if start else into)


class SessionProtocol(Protocol):
    """A ``Protocol`` whose messages belong to a session; see the module docstring."""

    __slots__ = (
        "_looking_up",
        "_peer_resume",
        "_refused",
        "_session_inbound",
        "replayed",
        "session",
    )

    def __init__(
        self,
        config: Config,
        role: Role,
        now: float,
        *,
        incarnation: int,
        session: Session | None,
        kernel: KernelProbe = _no_kernel,
        wall_offset: float = 0.0,
    ) -> None:
        """A client passes its session; a server passes None and calls ``accept_session``."""
        super().__init__(
            config, role, now, incarnation=incarnation, kernel=kernel, wall_offset=wall_offset
        )
        self._decoder = Decoder(config.max_frame, sessions=True)
        self._inbound = self._session_inbound = SessionInbound(config.max_message)
        self.session: Session | None = None
        self._peer_resume: Resume | None = None  # server: arrived before the lookup ended
        self._refused = False  # client: the server's HELLO said a refusal follows
        self._looking_up = False  # server: nothing may go out before our HELLO
        self.replayed = 0
        if session is not None:
            self._use(session)

    def _use(self, session: Session) -> None:
        self.session = self._session_inbound.session = session

    # ----------------------------------------------------------- from the adapter

    def connection_made(self, now: float) -> None:
        """The client's HELLO and RESUME go out at once; the server waits for the client's."""
        self._now = now
        self._handshake_deadline = now + self.config.handshake_timeout
        session = self.session
        if self.role == "client":
            assert session is not None, "a client protocol needs its session"
            self._control.append(self._hello(FLAG_SESSION, *session.hello_fields()))
            self._control.append(encode_resume(*session.attach(now)))

    def accept_session(self, session: Session, now: float) -> None:
        """Server: the store found (or opened) ``session``: HELLO, RESUME, then replay."""
        self._now = now
        if self.verdict is not None:
            return
        self._use(session)
        self._looking_up = False
        # first on the wire, before any PONG queued during the lookup
        self._control[:0] = [
            self._hello(FLAG_SESSION, session.session_id, session.token),
            encode_resume(*session.attach(now)),
        ]
        if self._peer_resume is not None:
            self._apply_resume(self._peer_resume, now)

    def refuse(self, code: GoodbyeCode, reason: str, detail: str, now: float) -> None:
        """Server: no session for this HELLO: an all-zero HELLO, then GOODBYE(``code``)."""
        self._now = now
        if self.verdict is not None:
            return
        self._looking_up = False
        self._control.insert(0, self._hello(FLAG_SESSION, NO_SESSION_ID, NO_TOKEN))
        self.leave(code, reason, detail, now)

    def let_go(self) -> None:
        """The verdict is in: forget the session. A dead connection may stay referenced a
        while (a stale timer entry), and a lost session holds every message it hands back."""
        if self.verdict is not None:
            self.session = self._session_inbound.session = None

    def data_to_send(self, budget: int = FLUSH_BUDGET, frames: int = FLUSH_FRAMES) -> list[bytes]:
        """As ``Protocol.data_to_send``; data comes from the session (its replay first).

        A server looking its session up says nothing yet (a PONG would reach the
        client before our HELLO): what it has waits behind the HELLO.
        """
        if self._looking_up and self.verdict is None:
            return []
        session = self.session
        if session is not None and self.verdict is None:
            self._write_ack()
            if budget > 0:
                first, fresh = session.outgoing_run()
                if fresh:
                    self._queue_session_data(first, fresh)
        return super().data_to_send(budget, frames)

    def _queue_session_data(self, first: int, fresh: list[bytes]) -> None:
        """Put the session's messages (seqs ``first`` on) in the outbox, which holds payloads
        only: the one at its head is seq ``outbound.sent_through + 1``
        (``Protocol._cut_data``), so the base is set from the session's numbers when the
        outbox is empty."""
        outbox = self._outbox
        if outbox is UNUSED:
            outbox = self._outbox = deque()
        if not outbox:
            self.outbound.sent_through = first - 1
        elif first != self.outbound.sent_through + len(outbox) + 1:
            raise LocalProtocolError(
                f"session seq {first} does not follow the outbox"
                f" (through {self.outbound.sent_through + len(outbox)})"
            )
        outbox.extend(fresh)

    @property
    def data_pending(self) -> bool:
        """The outbox, or messages the session numbered that no pass has pulled in yet.

        The session numbers a message at once; only a pass with a data budget moves it
        into the outbox. A message numbered while writing was paused must count here,
        or ``resume_writing`` schedules no pass and it is never written (issue 12).
        """
        session = self.session
        return bool(self._outbox) or (
            session is not None and self.verdict is None and session.unwritten > 0
        )

    def get_timer(self) -> float | None:
        """The connection's timer, or the session's replay-age bound if that comes first."""
        timer = super().get_timer()
        session = self.session
        if session is None or session.state is not State.ATTACHED:
            return timer
        bound = session.get_timer()
        if timer is None or (bound is not None and bound < timer):
            return bound
        return timer

    def handle_timer(self, now: float) -> None:
        super().handle_timer(now)
        session = self.session
        if session is not None and session.state is State.ATTACHED and self.verdict is None:
            session.handle_timer(now)
            if session.lost is not None:
                self._session_lost_here(session.lost)

    def events_received(self) -> list[AnyEvent]:  # type: ignore[override]
        """As ``Protocol.events_received``, with the session's events in their place."""
        return super().events_received()  # type: ignore[return-value]

    # ---------------------------------------------------------------- internals

    def _tell(self, event: SessionEvent) -> None:
        # the parent's list is typed for its own events; this subclass adds three kinds
        self._events.append(event)  # type: ignore[arg-type]

    def _hello(self, flags: int, session_id: bytes, token: bytes) -> bytes:
        config = self.config
        return encode_hello(
            Hello(
                PROTOCOL_VERSION,
                self._incarnation,
                config.interval,
                config.timeout,
                config.max_frame,
                config.max_message,
                flags,
                session_id,
                token,
            )
        )

    def _handshake(self, hello: Hello, now: float) -> None:
        session_hello = bool(hello.flags & FLAG_SESSION)
        if self.role == "server":
            if not session_hello:
                # the plain client reads a HELLO first, so it gets the reason by name
                self._control.append(self._hello(0, b"", b""))
                self.peer_hello = hello
                self._violation(NOT_A_SESSION_CLIENT)
                return
            super()._handshake(hello, now)
            self._looking_up = True
            self._tell(SessionRequest(hello.session_id, hello.token))
            return
        super()._handshake(hello, now)
        if not session_hello:
            self._violation(NOT_A_SESSION_SERVER)
        elif hello.session_id == NO_SESSION_ID:
            self._refused = True  # its GOODBYE says why
        else:
            session = self.session
            assert session is not None
            try:
                session.on_peer_hello(hello)
            except RemoteProtocolError as exc:
                self._violation(str(exc))

    def _on_control(self, frame: object, now: float) -> bool:
        kind = type(frame)
        if kind is Ack:
            session = self.session
            if session is None or session.state is not State.ATTACHED:
                raise RemoteProtocolError("ACK before RESUME")
            if session.on_ack(frame.seq):  # type: ignore[attr-defined]
                self._events.append(Acked(session.acked_through))
            return False
        if kind is Resume:
            return self._on_resume(frame, now)  # type: ignore[arg-type]
        if kind is Goodbye:
            self._on_goodbye(frame, now)  # type: ignore[arg-type]
        return super()._on_control(frame, now)

    def _on_resume(self, resume: Resume, now: float) -> bool:
        if self._refused:
            raise RemoteProtocolError("RESUME after a HELLO that refused the session")
        session = self.session
        if session is None:  # server: the store lookup is still running
            if self._peer_resume is not None:
                raise RemoteProtocolError("RESUME received twice")
            self._peer_resume = resume
            return False
        return self._apply_resume(resume, now)

    def _apply_resume(self, resume: Resume, now: float) -> bool:
        session = self.session
        assert session is not None
        session.on_resume(resume, now)  # RemoteProtocolError unless RESUMING
        if session.lost is not None:
            self._session_lost_here(session.lost)
            return True
        # the peer replays from our received_through on: nothing else is acceptable
        self._session_inbound.expected_seq = session.received_through + 1
        self.replayed = session.next_seq - 1 - resume.received_through
        self._tell(Attached(self.replayed))
        return False

    def _on_goodbye(self, goodbye: Goodbye, now: float) -> None:
        session = self.session
        if session is None or session.ended:
            return
        code = goodbye.code
        if code == GoodbyeCode.NORMAL:
            waiting = len(session.unacknowledged())
            if waiting:  # the peer ended while ours were on the way: they come back
                session.on_peer_lost(
                    f"the peer closed the session with {waiting} of our messages unacknowledged",
                    now,
                )
                self._tell(SessionEnded(session.lost))
                return
            session.close()
            self._tell(SessionEnded(None))
        elif code == GoodbyeCode.SESSION_LOST:
            session.on_peer_lost(goodbye.reason, now)
            self._tell(SessionEnded(session.lost))
        elif code == GoodbyeCode.SESSION_UNKNOWN and self.role == "client" and self._refused:
            session.on_unknown(now)
            self._tell(SessionEnded(session.lost))

    def _session_lost_here(self, lost: SessionLost) -> None:
        """This side ended the session (a bound, an inconsistent RESUME): tell the peer."""
        self._tell(SessionEnded(lost))
        self._leave(GoodbyeCode.SESSION_LOST, lost.reason, Cause.SESSION_LOST, lost.reason)

    def _write_ack(self) -> None:
        """ACK, cumulatively, every message of the session the application took."""
        session = self.session
        if session is not None and self.verdict is None:
            due = session.ack_due()
            if due is not None:
                self._control.append(encode_ack(due))

    def _declare_silent(self, now: float) -> None:
        super()._declare_silent(now)
        # the parent says GOODBYE(NORMAL), which in a session would end the session:
        # silence only detaches it, so the last control frame is replaced
        control = self._control
        if control:
            control[-1] = encode_goodbye(GoodbyeCode.GOING_AWAY, "peer silent")
