"""The sans-IO session core: exactly once, in order, across reconnects; honest when lost.

Time moves by arithmetic (``now += TICK``). The property tests run two Session
objects over a simulated link whose connection can drop at any point, losing
every frame in flight, as a reset TCP connection does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from peerwatch.core.frames import FLAG_SESSION, NO_SESSION_ID, NO_TOKEN, PROTOCOL_VERSION, Hello
from peerwatch.core.frames import Resume as ResumeFrame
from peerwatch.core.session import LostCause, Session, SessionLimits, State
from peerwatch.errors import ConfigError, LocalProtocolError, RemoteProtocolError

TICK = 0.25
SID = bytes(range(1, 17))
TOKEN = bytes(range(32, 64))
LIMITS = SessionLimits(max_replay_bytes=10_000, max_replay_age=60.0, window=30.0)


def attached_pair(now: float = 0.0) -> tuple[Session, Session]:
    client, server = Session(SID, TOKEN, LIMITS, now), Session(SID, TOKEN, LIMITS, now)
    to_server, to_client = client.attach(now), server.attach(now)
    server.on_resume(to_server, now)
    client.on_resume(to_client, now)
    return client, server


def test_messages_are_numbered_from_one_and_kept_until_acknowledged() -> None:
    client, server = attached_pair()
    assert [client.send(b"a", 0.0), client.send(b"bb", 0.0)] == [1, 2]
    assert client.outgoing() == [(1, b"a"), (2, b"bb")]
    assert client.outgoing() == []  # written once per connection
    for seq, payload in [(1, b"a"), (2, b"bb")]:
        assert server.on_message(seq, payload)
    assert server.take() == b"a"
    assert server.ack_due() == 1
    assert server.ack_due() is None
    assert client.on_ack(1) == 1
    assert client.unacknowledged() == (b"bb",)
    assert client.replay_bytes == 2


def test_resume_replays_exactly_the_tail_the_peer_does_not_hold() -> None:
    now = 0.0
    client, server = attached_pair(now)
    for i in range(1, 6):
        client.send(b"m%d" % i, now)
    sent = client.outgoing()
    for seq, payload in sent[:3]:  # messages 4 and 5 die with the connection
        server.on_message(seq, payload)
    assert server.take() == b"m1"  # taken, but its ACK is lost too
    now += TICK
    client.detach(now)
    server.detach(now)
    to_server, to_client = client.attach(now), server.attach(now)
    assert to_client == ResumeFrame(received_through=3, consumed_through=1)
    server.on_resume(to_server, now)
    client.on_resume(to_client, now)
    assert client.acked_through == 1  # the RESUME carried the lost ACK
    assert client.outgoing() == [(4, b"m4"), (5, b"m5")]
    assert client.unacknowledged() == (b"m2", b"m3", b"m4", b"m5")


def test_a_replayed_duplicate_is_dropped_and_counted() -> None:
    _, server = attached_pair()
    assert server.on_message(1, b"x")
    assert not server.on_message(1, b"x")
    assert server.duplicates_dropped == 1
    assert server.inbox == 1


def test_a_gap_is_a_protocol_error() -> None:
    _, server = attached_pair()
    with pytest.raises(RemoteProtocolError, match="DATA with sequence 3, expected 1"):
        server.on_message(3, b"x")


def test_data_before_resume_is_a_protocol_error() -> None:
    session = Session(SID, TOKEN, LIMITS, 0.0)
    session.attach(0.0)
    with pytest.raises(RemoteProtocolError, match="RESUME comes first"):
        session.on_message(1, b"x")


@pytest.mark.parametrize(
    ("resume", "problem"),
    [
        (ResumeFrame(1, 2), "consumed_through 2 above received_through 1"),
        (ResumeFrame(5, 2), "received_through 5, but only 3 were ever sent"),
        (ResumeFrame(3, 0), "consumed_through 0 below the 2 acknowledged"),
    ],
)
def test_an_inconsistent_resume_loses_the_session_with_every_unacked_message(
    resume: ResumeFrame, problem: str
) -> None:
    client, _ = attached_pair()
    for payload in (b"1", b"2", b"3"):
        client.send(payload, 0.0)
    client.outgoing()
    client.on_ack(2)
    client.detach(1.0)
    client.attach(2.0)
    client.on_resume(resume, 2.0)
    assert client.state is State.LOST
    assert client.lost is not None
    assert client.lost.cause is LostCause.INCONSISTENT
    assert problem in client.lost.detail
    assert client.lost.unacknowledged == (b"3",)
    assert client.lost.first_seq == 3


def test_ack_beyond_what_was_written_or_backwards_is_a_protocol_error() -> None:
    client, _ = attached_pair()
    client.send(b"a", 0.0)
    with pytest.raises(RemoteProtocolError, match="only 0 were ever sent"):
        client.on_ack(1)
    client.outgoing()
    client.on_ack(1)
    with pytest.raises(RemoteProtocolError, match="ACK went backwards"):
        client.on_ack(0)


def test_detached_session_is_lost_when_the_window_runs_out() -> None:
    now = 0.0
    client, _ = attached_pair(now)
    client.send(b"late", now)
    now += TICK
    client.detach(now)
    assert client.get_timer() == now + LIMITS.window
    now += LIMITS.window - TICK
    client.handle_timer(now)
    assert client.state is State.DETACHED
    now += TICK
    client.handle_timer(now)
    assert client.lost is not None
    assert client.lost.cause is LostCause.WINDOW
    assert client.lost.unacknowledged == (b"late",)
    assert client.get_timer() is None


def test_a_message_unacknowledged_past_max_age_loses_the_session() -> None:
    now = 0.0
    client, _ = attached_pair(now)
    client.send(b"old", now)
    now += 10 * TICK
    client.send(b"new", now)
    assert client.get_timer() == LIMITS.max_replay_age
    client.handle_timer(LIMITS.max_replay_age - TICK)
    assert client.lost is None
    client.handle_timer(LIMITS.max_replay_age)
    assert client.lost is not None
    assert client.lost.cause is LostCause.REPLAY_EXPIRED
    assert client.lost.unacknowledged == (b"old", b"new")


def test_replay_buffer_overflow_loses_the_session_and_hands_back_the_message_too() -> None:
    client, _ = attached_pair()
    client.send(b"a" * 6000, 0.0)
    assert client.room(4000) and not client.room(4001)
    client.send(b"b" * 4001, 0.0)
    assert client.lost is not None
    assert client.lost.cause is LostCause.REPLAY_OVERFLOW
    assert client.lost.unacknowledged == (b"a" * 6000, b"b" * 4001)
    with pytest.raises(LocalProtocolError, match="lost session"):
        client.send(b"c", 0.0)


def test_one_message_larger_than_the_buffer_is_taken_when_it_is_empty() -> None:
    client, _ = attached_pair()
    assert client.room(20_000)
    client.send(b"x" * 20_000, 0.0)
    assert client.lost is None


def test_unknown_session_hands_back_the_unacked_and_drops_the_inbox() -> None:
    client, server = attached_pair()
    client.send(b"mine", 0.0)
    server.send(b"theirs", 0.0)
    for seq, payload in server.outgoing():
        client.on_message(seq, payload)
    client.detach(1.0)
    client.on_unknown(2.0)
    assert client.lost is not None
    assert client.lost.cause is LostCause.UNKNOWN
    assert client.lost.unacknowledged == (b"mine",)
    assert client.lost.consumed_through == 0
    assert client.take() is None  # the server hands b"theirs" back to its own side


def test_client_adopts_the_id_and_token_of_a_new_session_and_checks_them_after() -> None:
    client = Session(NO_SESSION_ID, NO_TOKEN, LIMITS, 0.0)
    hello = Hello(PROTOCOL_VERSION, 1, 1.0, 5.0, 1 << 20, 1 << 20, FLAG_SESSION, SID, TOKEN)
    client.on_peer_hello(hello)
    assert client.hello_fields() == (SID, TOKEN)
    client.on_peer_hello(hello)
    with pytest.raises(RemoteProtocolError, match="another session"):
        client.on_peer_hello(hello._replace(token=bytes(32)))
    with pytest.raises(RemoteProtocolError, match="does not support sessions"):
        client.on_peer_hello(hello._replace(flags=0, session_id=b"", token=b""))


def test_authenticate_accepts_only_the_exact_token() -> None:
    session = Session(SID, TOKEN, LIMITS, 0.0)
    assert session.authenticate(TOKEN)
    assert not session.authenticate(TOKEN[:-1] + b"\x00")
    assert not session.authenticate(b"")


@pytest.mark.parametrize(
    "changes",
    [{"max_replay_bytes": 0}, {"max_replay_age": 0}, {"window": -1}, {"window": float("inf")}],
)
def test_impossible_limits_are_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        SessionLimits(**changes)  # type: ignore[arg-type]


# --- property tests over a simulated link that drops connections ----------------------


@dataclass
class Side:
    session: Session
    sent: list[bytes] = field(default_factory=list)  # what its application sent
    taken: list[bytes] = field(default_factory=list)  # what its application received
    wire: deque[tuple[str, object]] = field(default_factory=deque)  # frames toward the peer


class Link:
    """Two sessions and one connection at a time; a drop loses every frame in flight."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sides = [
            Side(Session(SID, TOKEN, LIMITS, 0.0)),
            Side(Session(SID, TOKEN, LIMITS, 0.0)),
        ]
        self.connected = False

    def connect(self) -> None:
        if self.connected:
            return
        self.connected = True
        for side in self.sides:
            side.wire.clear()
            side.wire.append(("resume", side.session.attach(self.now)))

    def drop(self) -> None:
        if self.connected:
            self.connected = False
            for side in self.sides:
                side.wire.clear()
                side.session.detach(self.now)

    def crash(self, index: int) -> None:
        """The process holding side ``index`` dies; another rebuilds it from the store.

        The store is written through (before any byte leaves and before the
        application gets a message), so it holds exactly the books of the moment.
        """
        self.drop()
        old = self.sides[index].session
        self.sides[index].session = Session.restore(
            old.session_id,
            old.token,
            old.limits,
            self.now,
            next_seq=old.next_seq,
            acked_through=old.acked_through,
            consumed_through=old.consumed_through,
            replay=old.replay(),
        )

    def send(self, index: int, size: int) -> None:
        side = self.sides[index]
        payload = b"%d:%d:" % (index, len(side.sent))
        payload += b"." * max(0, size - len(payload))
        if not side.session.room(len(payload)):
            return  # backpressure: the application waits
        side.session.send(payload, self.now)
        side.sent.append(payload)
        self.pump()

    def deliver(self, index: int, count: int) -> None:
        """Hand up to ``count`` frames from side ``index`` to its peer."""
        if not self.connected:
            return
        wire, peer = self.sides[index].wire, self.sides[1 - index].session
        for _ in range(min(count, len(wire))):
            kind, value = wire.popleft()
            if kind == "resume":
                assert isinstance(value, ResumeFrame)
                peer.on_resume(value, self.now)
            elif kind == "ack":
                assert isinstance(value, int)
                peer.on_ack(value)
            else:
                assert isinstance(value, tuple)
                peer.on_message(*value)
        self.pump()

    def take(self, index: int, count: int) -> None:
        side = self.sides[index]
        for _ in range(count):
            message = side.session.take()
            if message is None:
                break
            side.taken.append(message)
        self.pump()

    def pump(self) -> None:
        if not self.connected:
            return
        for side in self.sides:
            for message in side.session.outgoing():
                side.wire.append(("data", message))
            ack = side.session.ack_due()
            if ack is not None:
                side.wire.append(("ack", ack))

    def settle(self) -> None:
        """Reconnect and run until every message is delivered and taken (bounded)."""
        self.connect()
        for _ in range(1000):
            self.deliver(0, 10_000)
            self.deliver(1, 10_000)
            self.take(0, 10_000)
            self.take(1, 10_000)
            if not any(side.wire for side in self.sides):
                return
        raise AssertionError("the link did not settle in 1000 rounds")

    def check_bounds(self) -> None:
        for side in self.sides:
            session = side.session
            held = session.unacknowledged()
            assert session.replay_bytes == sum(map(len, held))
            assert session.replay_bytes <= LIMITS.max_replay_bytes or len(held) == 1


operation = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 1), st.integers(0, 3000)),
    st.tuples(st.just("deliver"), st.integers(0, 1), st.integers(1, 6)),
    st.tuples(st.just("take"), st.integers(0, 1), st.integers(1, 4)),
    st.tuples(st.just("drop"), st.just(0), st.just(0)),
    st.tuples(st.just("connect"), st.just(0), st.just(0)),
)
#: the exactly-once property also survives the server process dying (shared store)
operation_with_crashes = st.one_of(operation, st.tuples(st.just("crash"), st.just(1), st.just(0)))


def run(link: Link, operations: list[tuple[str, int, int]]) -> None:
    link.connect()
    for name, index, amount in operations:
        link.now += TICK
        if name == "send":
            link.send(index, amount)
        elif name == "deliver":
            link.deliver(index, amount)
        elif name == "take":
            link.take(index, amount)
        elif name == "drop":
            link.drop()
        elif name == "crash":
            link.crash(index)
        else:
            link.connect()
        link.check_bounds()


#: an ACK lost with the connection: only the RESUME's consumed_through can release it
LOST_ACK = [("send", 0, 0), ("deliver", 0, 1), ("deliver", 1, 1), ("deliver", 0, 1),
            ("drop", 0, 0), ("take", 1, 1)]  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(st.lists(operation_with_crashes, max_size=60))
@example(LOST_ACK)
def test_exactly_once_in_order_both_directions_across_any_drops(
    operations: list[tuple[str, int, int]],
) -> None:
    link = Link()
    run(link, operations)
    link.settle()
    client, server = link.sides
    assert server.taken == client.sent
    assert client.taken == server.sent
    for side in link.sides:
        assert side.session.unacknowledged() == ()
        assert side.session.lost is None
        assert side.session.duplicates_dropped == 0  # a resume replays only what is missing


@settings(max_examples=1000, deadline=None)
@given(st.lists(operation, max_size=60))
def test_a_lost_server_session_hands_back_exactly_what_was_not_acknowledged(
    operations: list[tuple[str, int, int]],
) -> None:
    link = Link()
    run(link, operations)
    link.drop()
    client, server = link.sides
    acked = client.session.acked_through
    client.session.on_unknown(link.now)  # the server restarted: its session is gone
    lost = client.session.lost
    assert lost is not None
    # handed back: exactly the messages after the acknowledged prefix, in order
    assert lost.first_seq == acked + 1
    assert lost.unacknowledged == tuple(client.sent[acked:])
    # what the server application took is in order, without duplicates, and covers
    # every acknowledged message; beyond that only messages whose ACK was in flight
    assert server.taken == client.sent[: len(server.taken)]
    assert len(server.taken) >= acked
    assert lost.consumed_through == len(client.taken)


def test_restore_refuses_torn_books() -> None:
    with pytest.raises(LocalProtocolError, match="torn"):
        Session.restore(
            SID, TOKEN, LIMITS, 0.0, next_seq=5, acked_through=1, consumed_through=0,
            replay=[(2, b"x", 0.0), (4, b"y", 0.0)],
        )  # fmt: skip


def test_a_restored_session_asks_again_for_what_its_inbox_held() -> None:
    client, server = attached_pair()
    client.send(b"a", 0.0)
    client.send(b"b", 0.0)
    for message in client.outgoing():
        server.on_message(*message)
    assert server.take() == b"a"
    restored = Session.restore(
        SID, TOKEN, LIMITS, 1.0, next_seq=1, acked_through=0, consumed_through=1, replay=[]
    )
    assert restored.attach(1.0) == ResumeFrame(received_through=1, consumed_through=1)


def test_a_second_resume_on_the_same_connection_is_a_protocol_error() -> None:
    client, _ = attached_pair()
    with pytest.raises(RemoteProtocolError, match="RESUME while the session is attached"):
        client.on_resume(ResumeFrame(0, 0), 0.0)


# --- any event in any state: a precise protocol error or a valid step, never a crash -------

event = st.one_of(
    st.tuples(st.just("attach"), st.integers(0, 0)),
    st.tuples(st.just("resume"), st.tuples(st.integers(0, 12), st.integers(0, 12))),
    st.tuples(st.just("detach"), st.integers(0, 0)),
    st.tuples(st.just("close"), st.integers(0, 0)),
    st.tuples(st.just("peer_lost"), st.integers(0, 0)),
    st.tuples(st.just("unknown"), st.integers(0, 0)),
    st.tuples(st.just("send"), st.integers(0, 6000)),
    st.tuples(st.just("outgoing"), st.integers(0, 0)),
    st.tuples(st.just("ack"), st.integers(0, 12)),
    st.tuples(st.just("message"), st.integers(0, 12)),
    st.tuples(st.just("take"), st.integers(0, 0)),
    st.tuples(st.just("ack_due"), st.integers(0, 0)),
    st.tuples(st.just("timer"), st.integers(0, 100)),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(event, max_size=40))
def test_any_event_in_any_state_is_a_valid_step_or_a_protocol_error(
    events: list[tuple[str, object]],
) -> None:
    session = Session(SID, TOKEN, LIMITS, 0.0)
    now = 0.0
    for name, arg in events:
        now += TICK
        try:
            if name == "attach":
                session.attach(now)
            elif name == "resume":
                assert isinstance(arg, tuple)
                session.on_resume(ResumeFrame(*arg), now)
            elif name == "detach":
                session.detach(now)
            elif name == "close":
                session.close()
            elif name == "peer_lost":
                session.on_peer_lost("bye", now)
            elif name == "unknown":
                session.on_unknown(now)
            elif name == "send":
                assert isinstance(arg, int)
                session.send(b"s" * arg, now)
            elif name == "outgoing":
                session.outgoing()
            elif name == "ack":
                assert isinstance(arg, int)
                session.on_ack(arg)
            elif name == "message":
                assert isinstance(arg, int)
                session.on_message(arg, b"m")
            elif name == "take":
                session.take()
            elif name == "ack_due":
                session.ack_due()
            else:
                assert isinstance(arg, int)
                session.handle_timer(now + arg)
        except (LocalProtocolError, RemoteProtocolError):
            pass
        held = session.replay()
        assert session.replay_bytes == sum(len(p) for _, p, _ in held)
        assert [seq for seq, _, _ in held] == list(
            range(session.acked_through + 1, session.next_seq)
        ) or session.ended
        assert session.consumed_through <= session.received_through
        if session.lost is not None:
            assert held == [] and session.inbox == 0
            lost = session.lost
            assert lost.first_seq + len(lost.unacknowledged) == session.next_seq


def test_a_resume_claiming_a_message_sent_while_detached_is_inconsistent() -> None:
    client, _ = attached_pair()
    client.detach(1.0)
    client.send(b"queued while away", 1.0)  # numbered 1, never written to any connection
    client.attach(2.0)
    client.on_resume(ResumeFrame(1, 0), 2.0)
    assert client.lost is not None
    assert "received_through 1, but only 0 were ever sent" in client.lost.detail
    assert client.lost.unacknowledged == (b"queued while away",)
