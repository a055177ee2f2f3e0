"""Sessions that survive the connection: sequence numbers, replay buffer, resume handshake.

Pure state, like the rest of ``core``: no clock, no I/O. Every entry point that
cares about time takes ``now`` (seconds, any monotonic origin), ``get_timer()``
names the next deadline and ``handle_timer(now)`` acts on it. The wire rules are
docs/PROTOCOL.md section 8; the rules this object enforces:

1. Messages are numbered by the session from 1, across connections. A message
   stays in the replay buffer until the peer *application* took it (ACK, or the
   ``consumed_through`` of a RESUME): only then is it certain not to be needed.
2. Inbound, seq ``received_through + 1`` is delivered to the inbox, a lower seq
   is a replayed duplicate and dropped, a higher one is a gap (protocol error).
   The inbox belongs to the session, so messages in it survive a reconnect.
3. A connection is attached with ``attach()`` (our RESUME numbers out) and
   becomes usable with ``on_resume()`` (the peer's numbers in): everything
   after the peer's ``received_through`` is written again, in order, before
   anything new. A RESUME that contradicts our books ends the session: the two
   sides no longer agree on what was delivered.
4. The replay buffer is bounded in bytes (``max_replay_bytes``; one message
   alone may exceed it, so every message can be sent) and in age (a message
   unacknowledged for ``max_replay_age``); a detached session lives at most
   ``window`` seconds. Past any bound the session is lost. A message's age is
   counted from the start of the step of ``max_replay_age / AGE_STEPS`` it was
   numbered in: it may expire that much early, never late.
5. A lost session hands back, in order, every message the peer did not
   acknowledge, and never one it did: the acknowledged prefix left the buffer
   when its ACK arrived, and nothing else ever leaves it. The inbox of a lost
   session is dropped undelivered: the peer hands those messages back to its
   own application, so delivering them here too would deliver them twice.
"""

from __future__ import annotations

import enum
import hmac
from collections import deque
from dataclasses import dataclass
from itertools import islice, repeat

from peerwatch.core.frames import (
    FLAG_SESSION,
    NO_SESSION_ID,
    TOKEN_SIZE,
    Hello,
    Resume,
)
from peerwatch.errors import ConfigError, LocalProtocolError, RemoteProtocolError

#: Why a session client and a plain server (or the reverse) part at their HELLO, and what
#: to change: each side's user reads it once, as the first connection fails.
NOT_A_SESSION_CLIENT = (
    "this server serves resumable sessions only (HELLO without the SESSION flag):"
    " connect with resume=True"
)
NOT_A_SESSION_SERVER = (
    "peer does not support sessions (plain HELLO):"
    " connect without resume=True, or serve with resume_window"
)


class State(enum.Enum):
    DETACHED = "detached"  # no connection; kept until the window or a bound runs out
    RESUMING = "resuming"  # a connection is attached, the peer's RESUME has not arrived
    ATTACHED = "attached"  # messages flow
    LOST = "lost"  # ended without agreement: ``lost`` says why and hands messages back
    CLOSED = "closed"  # ended in agreement (GOODBYE NORMAL inside the session)


class LostCause(str, enum.Enum):
    """Why a session could not be resumed."""

    UNKNOWN = "UNKNOWN"  # the server does not know it (restarted without a shared store)
    WINDOW = "WINDOW"  # detached for longer than the window (server) or resume_timeout (client)
    REPLAY_OVERFLOW = "REPLAY_OVERFLOW"  # unacknowledged bytes past max_replay_bytes
    REPLAY_EXPIRED = "REPLAY_EXPIRED"  # a message unacknowledged for max_replay_age
    INCONSISTENT = "INCONSISTENT"  # the peer's RESUME contradicts what we know
    PEER_LOST = "PEER_LOST"  # the peer said GOODBYE(SESSION_LOST)
    STORE = "STORE"  # the store that keeps the session's books failed (e.g. Redis unreachable)
    OVERLOADED = "OVERLOADED"  # the server's memory budget was exceeded and this held the most

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SessionLost:
    """The end of a session that could not go on: what happened, and what comes back."""

    cause: LostCause
    detail: str  # one line for humans
    at: float  # when it was decided (the ``now`` of the deciding call)
    first_seq: int  # session seq of unacknowledged[0] (the next one when it is empty)
    unacknowledged: tuple[bytes, ...]  # every message the peer did not acknowledge, in order
    consumed_through: int  # last seq of the peer's messages our application took

    @property
    def reason(self) -> str:
        """The reason our GOODBYE(SESSION_LOST) carries: the cause's name first (PROTOCOL.md 8)."""
        return f"{self.cause}: {self.detail}"


_INF = float("inf")
_UNBOUNDED = 1 << 62  # a window no count of messages reaches

#: How a session lost by the peer begins its detail; said once, however it was relayed.
PEER_LOST_DETAIL = "the peer lost the session: "
#: Causes a peer's GOODBYE(SESSION_LOST) passes on to this side's verdict: what failed
#: over there (its books, its memory), which the application may act on.
_KEPT_FROM_PEER = frozenset({"STORE", "OVERLOADED"})


@dataclass(frozen=True)
class SessionLimits:
    """How long and how much a session may hold for a peer that is away."""

    max_replay_bytes: int = 8 * 1024 * 1024
    max_replay_age: float = 300.0
    window: float = 30.0  # how long a detached session is kept

    def __post_init__(self) -> None:
        if not isinstance(self.max_replay_bytes, int) or self.max_replay_bytes < 1:
            raise ConfigError(f"max_replay_bytes must be at least 1, got {self.max_replay_bytes!r}")
        for name in ("max_replay_age", "window"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")


#: The bounds a session gets when the caller names none.
DEFAULT_LIMITS = SessionLimits()

#: The replay buffer keeps one enqueue time per ``max_replay_age / AGE_STEPS`` (the time
#: of the first message numbered in that step), not one per message: a (seq, payload,
#: time) tuple per message was the sender's largest cost per message after the coroutine
#: (issue 12). A message may so expire up to 0.1 % of ``max_replay_age`` early.
AGE_STEPS = 1000


class Session:
    """One side of a session. The adapter owns the connections; this owns the messages."""

    __slots__ = (
        "_ack_sent",
        "_age_step",
        "_inbox",
        "_next_stamp",
        "_replay",
        "_stamps",
        "_written_through",
        "acked_through",
        "consumed_through",
        "detached_since",
        "duplicates_dropped",
        "inbox_bytes",
        "limits",
        "lost",
        "next_seq",
        "received_through",
        "replay_bytes",
        "sent_through",
        "session_id",
        "state",
        "token",
    )

    def __init__(self, session_id: bytes, token: bytes, limits: SessionLimits, now: float) -> None:
        """A session, detached until its first connection; a client passes NO_SESSION_ID."""
        self.session_id = session_id
        self.token = token
        self.limits = limits
        self.state = State.DETACHED
        self.detached_since = now
        self.lost: SessionLost | None = None
        # outbound: the payloads of seqs acked_through + 1 .. next_seq - 1, not yet
        # acknowledged; seqs are consecutive, so none is kept with its payload
        self._replay: deque[bytes] = deque()
        self.replay_bytes = 0
        self.next_seq = 1
        self.acked_through = 0
        self._written_through = 0  # highest seq ever handed to a connection
        self.sent_through = 0  # highest seq handed to the current connection
        # (first seq, enqueue time) of each age step holding unacknowledged messages
        self._stamps: deque[tuple[int, float]] = deque()
        self._next_stamp = -_INF  # a message numbered from then on opens a new step
        self._age_step = limits.max_replay_age / AGE_STEPS
        # inbound
        self._inbox: deque[bytes] = deque()
        self.inbox_bytes = 0  # payload bytes in the inbox (a server's memory budget counts them)
        self.received_through = 0
        self.consumed_through = 0
        self._ack_sent = 0
        self.duplicates_dropped = 0

    @classmethod
    def restore(
        cls,
        session_id: bytes,
        token: bytes,
        limits: SessionLimits,
        now: float,
        *,
        next_seq: int,
        acked_through: int,
        consumed_through: int,
        replay: list[tuple[int, bytes, float]],
    ) -> Session:
        """A detached session rebuilt from what a shared store kept (``sessions/``).

        The store keeps no inbox: a restored session has received exactly what its
        application consumed, so its RESUME asks the peer to replay the rest (the
        peer still holds them, they were never acknowledged). ``replay`` holds
        ``(seq, payload, enqueued_at)`` with consecutive seqs ending at
        ``next_seq - 1``, ``enqueued_at`` on this side's clock.
        """
        first = next_seq - len(replay)
        if first != acked_through + 1 or [seq for seq, _, _ in replay] != list(
            range(first, next_seq)
        ):
            raise LocalProtocolError(
                f"stored session is torn: {len(replay)} messages kept for seqs"
                f" {acked_through + 1}..{next_seq - 1}"
            )
        session = cls(session_id, token, limits, now)
        session._replay.extend(payload for _, payload, _ in replay)
        session.replay_bytes = sum(len(payload) for _, payload, _ in replay)
        stamps = session._stamps
        for seq, _, enqueued_at in replay:  # each kept time as it was: none moves later
            if not stamps or stamps[-1][1] != enqueued_at:
                stamps.append((seq, enqueued_at))
        session.next_seq = next_seq
        session.acked_through = acked_through
        session._written_through = next_seq - 1  # a dead owner may have written them all
        session.received_through = session.consumed_through = consumed_through
        session._ack_sent = consumed_through
        return session

    # ------------------------------------------------------------------ state

    @property
    def held_bytes(self) -> int:
        """Payload bytes this session holds for its peer: the replay buffer and the inbox."""
        return self.replay_bytes + self.inbox_bytes

    @property
    def ended(self) -> bool:
        return self.state is State.LOST or self.state is State.CLOSED

    def authenticate(self, token: bytes) -> bool:
        """True if ``token`` is this session's (constant time: no timing oracle)."""
        return hmac.compare_digest(token, self.token)

    def hello_fields(self) -> tuple[bytes, bytes]:
        """Session id and token for our HELLO (all zeros: a client asking for a new one)."""
        return self.session_id, self.token

    def on_peer_hello(self, hello: Hello) -> None:
        """Client side: check the server's HELLO names this session; adopt a new one's id."""
        if not hello.flags & FLAG_SESSION:
            raise RemoteProtocolError(NOT_A_SESSION_SERVER)
        if self.session_id == NO_SESSION_ID:
            if hello.session_id == NO_SESSION_ID or len(hello.token) != TOKEN_SIZE:
                raise RemoteProtocolError("server opened a session without an id or token")
            self.session_id = hello.session_id
            self.token = hello.token
        elif hello.session_id != self.session_id or not self.authenticate(hello.token):
            raise RemoteProtocolError("server answered for another session")

    # -------------------------------------------------------------- connection

    def attach(self, now: float) -> Resume:
        """A new connection carries the session; returns the RESUME to send after HELLO."""
        if self.state is not State.DETACHED:
            raise LocalProtocolError(f"attach() on a {self.state.value} session")
        self.state = State.RESUMING
        self._ack_sent = self.consumed_through  # the RESUME says it
        return Resume(self.received_through, self.consumed_through)

    def on_resume(self, resume: Resume, now: float) -> None:
        """The peer's RESUME: apply its ACK and make its missing tail the next to write."""
        if self.state is not State.RESUMING:
            raise RemoteProtocolError(f"RESUME while the session is {self.state.value}")
        received, consumed = resume
        last = self._written_through  # the peer cannot hold a message never written
        problem = None
        if consumed > received:
            problem = f"consumed_through {consumed} above received_through {received}"
        elif consumed < self.acked_through:
            problem = f"consumed_through {consumed} below the {self.acked_through} acknowledged"
        elif received > last:
            problem = f"received_through {received}, but only {last} were ever sent"
        if problem is not None:
            self._lose(LostCause.INCONSISTENT, f"inconsistent RESUME: {problem}", now)
            return
        self._release(consumed)
        self.sent_through = received  # the replay starts after what the peer holds
        self.state = State.ATTACHED

    def detach(self, now: float) -> None:
        """The connection is gone (any cause but an agreed end): keep the session for a while."""
        if self.state is State.RESUMING or self.state is State.ATTACHED:
            self.state = State.DETACHED
            self.detached_since = now

    def close(self) -> None:
        """Both sides agreed to end the session (GOODBYE NORMAL)."""
        if not self.ended:
            self.state = State.CLOSED
            self._inbox.clear()
            self.inbox_bytes = 0

    def on_peer_lost(self, reason: str, now: float) -> None:
        """The peer said GOODBYE(SESSION_LOST): it will not resume, so neither can we.

        Its reason names its cause first (``STORE: ...``). A store failure or an
        overloaded server keeps its cause (the application learns why the peer's side
        gave up, not just that it ended); any cause's name and a relayed "the peer
        lost the session" are said once in the detail, not once per side that passed
        it on.
        """
        cause = LostCause.PEER_LOST
        name, colon, rest = reason.partition(": ")
        if colon and name in LostCause.__members__:
            reason = rest
            if name in _KEPT_FROM_PEER:
                cause = LostCause(name)
        while reason.startswith(PEER_LOST_DETAIL):
            reason = reason[len(PEER_LOST_DETAIL) :]
        self._lose(cause, PEER_LOST_DETAIL + (reason or "no reason"), now)

    def on_store_failed(self, reason: str, now: float) -> None:
        """The store keeping this session's books failed: going on would break exactly-once."""
        self._lose(LostCause.STORE, f"the session store failed: {reason}", now)

    def on_overloaded(self, detail: str, now: float) -> None:
        """The server is over its memory budget and this session holds the most: it ends here,
        handing its messages back, rather than every session of the server risking more."""
        self._lose(LostCause.OVERLOADED, detail, now)

    def on_unknown(self, now: float) -> None:
        """The server answered GOODBYE(SESSION_UNKNOWN): it no longer has the session."""
        self._lose(
            LostCause.UNKNOWN,
            "the server does not know the session (restarted, or its window expired)",
            now,
        )

    # ---------------------------------------------------------------- outbound

    def room(self, size: int) -> bool:
        """True if a message of ``size`` bytes fits the replay buffer (backpressure)."""
        return not self._replay or self.replay_bytes + size <= self.limits.max_replay_bytes

    def offer(self, payload: bytes, now: float, window: int, *, bounded: bool = True) -> int:
        """Number a message and keep it until acknowledged; returns its seq. Or 0, and
        nothing changes, if ``window`` messages are unacknowledged or (``bounded``) the
        replay buffer has no ``room`` for it: the sender waits for an ACK.

        The sender's per-message path: one call where the checks and the numbering were
        four (issue 12)."""
        replay = self._replay
        size = len(payload)
        if len(replay) >= window or (
            bounded and replay and self.replay_bytes + size > self.limits.max_replay_bytes
        ):
            return 0
        if self.state is State.LOST or self.state is State.CLOSED:
            if self.lost is not None:
                raise LocalProtocolError(f"send() on a lost session: {self.lost.detail}")
            raise LocalProtocolError("send() on a closed session")
        seq = self.next_seq
        self.next_seq = seq + 1
        replay.append(payload)
        self.replay_bytes += size
        if now >= self._next_stamp:
            self._stamps.append((seq, now))
            self._next_stamp = now + self._age_step
        return seq

    def send(self, payload: bytes, now: float) -> int:
        """Number a message and keep it until acknowledged; returns its seq.

        A message that does not fit (``room()`` said no) ends the session with
        REPLAY_OVERFLOW and is handed back last, after the ones before it.
        """
        fits = self.room(len(payload))
        seq = self.offer(payload, now, _UNBOUNDED, bounded=False)
        if not fits:
            self._lose(
                LostCause.REPLAY_OVERFLOW,
                f"replay buffer over {self.limits.max_replay_bytes} bytes unacknowledged",
                now,
            )
        return seq

    @property
    def in_flight(self) -> int:
        """Messages numbered and not yet acknowledged."""
        return self.next_seq - 1 - self.acked_through

    @property
    def unwritten(self) -> int:
        """How many messages ``outgoing()`` has now: numbered, not yet on this connection."""
        if self.state is not State.ATTACHED:
            return 0
        return self.next_seq - 1 - self.sent_through

    def outgoing_run(self) -> tuple[int, list[bytes]]:
        """Messages to write now on the attached connection, in order (the replay first):
        the seq of the first, and the payloads (consecutive seqs)."""
        last = self.next_seq - 1
        sent = self.sent_through
        if self.state is not State.ATTACHED or sent >= last:
            return last + 1, []
        replay = self._replay
        first = last + 1 - len(replay)
        sent = max(sent, first - 1)
        new = last - sent
        if new == len(replay):
            out = list(replay)
        else:  # the newest few, read from the end: not past every one in flight
            out = list(islice(reversed(replay), new))
            out.reverse()
        self.sent_through = last
        self._written_through = max(self._written_through, last)
        return sent + 1, out

    def outgoing(self) -> list[tuple[int, bytes]]:
        """``outgoing_run()`` as (seq, payload) pairs."""
        first, payloads = self.outgoing_run()
        return list(enumerate(payloads, first))

    def on_ack(self, seq: int) -> int:
        """A cumulative ACK; returns how many messages it released from the replay buffer."""
        if seq > self._written_through:
            raise RemoteProtocolError(
                f"ACK for sequence {seq}, but only {self._written_through} were ever sent"
            )
        if seq < self.acked_through:
            raise RemoteProtocolError(
                f"ACK went backwards: {seq} after {self.acked_through} (ACKs are cumulative)"
            )
        return self._release(seq)

    def unacknowledged(self) -> tuple[bytes, ...]:
        return tuple(self._replay)

    def replay(self) -> list[tuple[int, bytes, float]]:
        """The replay buffer as ``(seq, payload, enqueued_at)``: what a store keeps
        (``enqueued_at``: the start of the message's age step)."""
        stamps = list(self._stamps)
        out = []
        step = 0
        seq = self.next_seq - len(self._replay)
        for payload in self._replay:
            while step + 1 < len(stamps) and stamps[step + 1][0] <= seq:
                step += 1
            out.append((seq, payload, stamps[step][1]))
            seq += 1
        return out

    def _release(self, seq: int) -> int:
        """Drop the acknowledged head of the replay buffer (through ``seq``); returns how
        many messages left it."""
        count = min(seq - self.acked_through, len(self._replay))
        self.acked_through = max(self.acked_through, seq)
        if count <= 0:
            return 0
        replay = self._replay
        if count == len(replay):  # everything: a sender that waits for its ACKs
            replay.clear()
            self.replay_bytes = 0
            self._stamps.clear()
            self._next_stamp = -_INF
            return count
        self.replay_bytes -= sum(map(len, islice(replay, count)))
        popleft = replay.popleft
        for _ in repeat(None, count):  # measured: 25 % less than a generator of popleft()
            popleft()
        stamps = self._stamps
        head = self.next_seq - len(replay)  # the oldest message left
        while len(stamps) > 1 and stamps[1][0] <= head:
            stamps.popleft()
        return count

    # ----------------------------------------------------------------- inbound

    def on_message(self, seq: int, payload: bytes) -> bool:
        """A whole message from the peer; True if new (inboxed), False if a dropped duplicate."""
        return self.on_run(seq, [payload]) == 1

    def on_run(self, first_seq: int, payloads: list[bytes]) -> int:
        """Whole messages from the peer, of seqs ``first_seq`` on; returns how many were new
        (inboxed). Those at or below ``received_through`` are replayed duplicates, dropped.

        The receiver's per-message path, called once per read of DATA frames: the
        inbox and its counters grow per batch, not per message (issue 12)."""
        if self.state is not State.ATTACHED:
            raise RemoteProtocolError(
                f"DATA while the session is {self.state.value} (RESUME comes first)"
            )
        expected = self.received_through + 1
        if first_seq != expected:
            if first_seq > expected:
                raise RemoteProtocolError(
                    f"DATA with sequence {first_seq}, expected {expected}"
                    " (sequences must be consecutive)"
                )
            duplicates = min(expected - first_seq, len(payloads))
            self.duplicates_dropped += duplicates
            payloads = payloads[duplicates:]
        count = len(payloads)
        if count:
            self.received_through += count
            self._inbox.extend(payloads)
            self.inbox_bytes += sum(map(len, payloads)) if count > 1 else len(payloads[0])
        return count

    @property
    def inbox(self) -> int:
        """Messages received and not yet taken by the application."""
        return len(self._inbox)

    def take(self) -> bytes | None:
        """The next message for the application, or None; taking it makes an ACK due."""
        inbox = self._inbox
        if not inbox:
            return None
        self.consumed_through += 1
        message = inbox.popleft()
        self.inbox_bytes -= len(message)
        return message

    def ack_due(self) -> int | None:
        """The cumulative ACK to send now, if the application took something since the last."""
        if self.state is not State.ATTACHED or self.consumed_through <= self._ack_sent:
            return None
        self._ack_sent = self.consumed_through
        return self.consumed_through

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """The next moment ``handle_timer`` may end the session (None: no deadline)."""
        if self.ended:
            return None
        deadlines = []
        if self.state is State.DETACHED:
            deadlines.append(self.detached_since + self.limits.window)
        if self._replay:
            deadlines.append(self._stamps[0][1] + self.limits.max_replay_age)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        if self.ended:
            return
        if self.state is State.DETACHED and now >= self.detached_since + self.limits.window:
            self._lose(
                LostCause.WINDOW,
                f"no connection for {now - self.detached_since:.3f} s"
                f" (window {self.limits.window} s)",
                now,
            )
        elif self._replay and now >= self._stamps[0][1] + self.limits.max_replay_age:
            seq, since = self.acked_through + 1, self._stamps[0][1]
            self._lose(
                LostCause.REPLAY_EXPIRED,
                f"message {seq} unacknowledged for {now - since:.3f} s"
                f" (max_replay_age {self.limits.max_replay_age} s)",
                now,
            )

    def _lose(self, cause: LostCause, detail: str, now: float) -> None:
        if self.ended:
            return
        replay = self._replay
        self.lost = SessionLost(
            cause=cause,
            detail=detail,
            at=now,
            first_seq=self.next_seq - len(replay),
            unacknowledged=self.unacknowledged(),
            consumed_through=self.consumed_through,
        )
        self.state = State.LOST
        replay.clear()
        self.replay_bytes = 0
        self._stamps.clear()
        self._inbox.clear()
        self.inbox_bytes = 0
