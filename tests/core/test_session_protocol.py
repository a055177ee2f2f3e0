"""The session rules on the sans-IO ``SessionProtocol``, two of them back to back, fake clock.

No socket, no sleep: ``now += TICK`` arithmetic, the real protocol on both sides,
``pump`` carrying what each hands out to the other (a new pair of protocols with
the same two sessions is a reconnect).
"""

from __future__ import annotations

from peerwatch.core.config import Config
from peerwatch.core.decoder import Decoder
from peerwatch.core.frames import (
    NO_SESSION_ID,
    NO_TOKEN,
    Data,
    Frame,
    Goodbye,
    GoodbyeCode,
    Hello,
    encode_hello,
    encode_ping,
    encode_resume,
)
from peerwatch.core.session import LostCause, Session, SessionLimits, State
from peerwatch.core.session_protocol import (
    AnyEvent,
    Attached,
    SessionEnded,
    SessionProtocol,
    SessionRequest,
)
from peerwatch.core.verdicts import Cause, Verdict

TICK = 0.001
CFG = Config(interval=1.0, timeout=5.0, handshake_timeout=2.0)
LIMITS = SessionLimits(max_replay_bytes=1 << 20, max_replay_age=60.0, window=10.0)
SID = bytes(range(1, 17))
TOKEN = bytes(range(32, 64))


def pump(a: SessionProtocol, b: SessionProtocol, now: float) -> None:
    """Carry bytes both ways until neither side has anything to say."""
    for _ in range(100):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for data in src.data_to_send():
                dst.receive_data(data, now)
                moved = True
        if not moved:
            return
    raise AssertionError("the two protocols never went quiet")


def events(protocol: SessionProtocol) -> list[AnyEvent]:
    return protocol.events_received()


def kinds(evs: list[AnyEvent]) -> list[str]:
    return [type(e).__name__ for e in evs]


def connect(
    client_session: Session, server_session: Session, now: float
) -> tuple[SessionProtocol, SessionProtocol]:
    """One connection carrying the pair: client HELLO+RESUME, server lookup, answer."""
    client = SessionProtocol(CFG, "client", now, incarnation=1, session=client_session)
    server = SessionProtocol(CFG, "server", now, incarnation=2, session=None)
    client.connection_made(now)
    server.connection_made(now)
    assert server.data_to_send() == []  # the server's HELLO waits for the lookup
    for data in client.data_to_send():
        server.receive_data(data, now)
    requests = [e for e in events(server) if isinstance(e, SessionRequest)]
    assert len(requests) == 1
    server.accept_session(server_session, now)
    pump(client, server, now)
    return client, server


def new_pair(now: float) -> tuple[Session, Session]:
    return Session(NO_SESSION_ID, NO_TOKEN, LIMITS, now), Session(SID, TOKEN, LIMITS, now)


def test_a_new_session_adopts_the_servers_id_and_token_and_both_sides_attach() -> None:
    now = 0.0
    mine, theirs = new_pair(now)
    client, server = connect(mine, theirs, now)
    assert mine.session_id == SID and mine.token == TOKEN
    assert mine.state is State.ATTACHED and theirs.state is State.ATTACHED
    assert client.verdict is None and server.verdict is None


def test_a_reconnect_replays_exactly_the_unacknowledged_tail_once_in_order() -> None:
    now = 0.0
    mine, theirs = new_pair(now)
    client, server = connect(mine, theirs, now)
    events(client), events(server)
    for i in range(5):
        mine.send(b"c%d" % i, now)
    pump(client, server, now)
    assert [theirs.take() for _ in range(2)] == [b"c0", b"c1"]
    pump(client, server, now)  # the ACK of 2
    assert mine.acked_through == 2
    # the connection dies: messages 3..5 reached the server's inbox, 6 never left
    now += TICK
    mine.send(b"c5", now)
    client.connection_lost(ConnectionResetError(), now)
    server.connection_lost(ConnectionResetError(), now)
    mine.detach(now)
    theirs.detach(now)
    now += TICK
    client, server = connect(mine, theirs, now)
    client_events = events(client)
    assert Attached(1) in client_events  # only c5: the server holds c2..c4 unconsumed
    assert [theirs.take() for _ in range(theirs.inbox)] == [b"c2", b"c3", b"c4", b"c5"]
    assert theirs.duplicates_dropped == 0
    pump(client, server, now)
    assert mine.acked_through == 6 and mine.unacknowledged() == ()


def test_data_seqs_go_on_from_the_session_not_from_one() -> None:
    now = 0.0
    mine, theirs = new_pair(now)
    client, server = connect(mine, theirs, now)
    for i in range(3):
        mine.send(b"%d" % i, now)
    pump(client, server, now)
    while theirs.take() is not None:
        pass
    pump(client, server, now)
    mine.detach(now)  # the connection died; the old pair never speaks again
    theirs.detach(now)
    client2, _ = connect(mine, theirs, now)
    mine.send(b"next", now)
    data = client2.data_to_send()
    assert [(f.seq, f.payload) for f in _frames(data) if isinstance(f, Data)] == [(4, b"next")]


def test_an_unacknowledged_message_past_max_replay_age_ends_the_session_at_that_moment() -> None:
    now = 0.0
    mine, theirs = new_pair(now)
    client, server = connect(mine, theirs, now)
    events(client)
    mine.send(b"never taken", now)
    pump(client, server, now)
    expires = now + LIMITS.max_replay_age
    while True:  # the server pongs, so only the replay bound can end this
        timer = client.get_timer()
        assert timer is not None
        now = min(timer, expires - TICK) if timer < expires else expires
        client.handle_timer(now)
        server.handle_timer(now)
        pump(client, server, now)
        if now >= expires:
            break
    got = events(client)
    ended = [e for e in got if isinstance(e, SessionEnded)]
    assert len(ended) == 1 and ended[0].lost is not None
    assert ended[0].lost.cause is LostCause.REPLAY_EXPIRED
    assert ended[0].lost.unacknowledged == (b"never taken",)
    assert client.verdict is not None and client.verdict.cause is Cause.SESSION_LOST
    server_ended = [e for e in events(server) if isinstance(e, SessionEnded)]
    assert server_ended and server_ended[0].lost is not None
    assert server_ended[0].lost.cause is LostCause.PEER_LOST


def test_a_silent_peer_gets_going_away_so_its_session_only_detaches() -> None:
    now = 0.0
    mine, theirs = new_pair(now)
    client, server = connect(mine, theirs, now)
    while client.verdict is None:  # the server hears nothing more: the client goes silent
        timer = server.get_timer()
        assert timer is not None
        now = timer
        server.handle_timer(now)
        client.data_to_send()  # the client's PINGs are lost
        if server.verdict is not None:
            break
    assert server.verdict is not None and server.verdict.cause is Cause.SILENT
    said = server.data_to_send()
    assert [f.code for f in _frames(said) if isinstance(f, Goodbye)] == [GoodbyeCode.GOING_AWAY]
    client.receive_data(b"".join(said), now)  # the client hears it: detached, not ended
    assert client.verdict is not None and client.verdict.cause is Cause.GOODBYE
    assert not any(isinstance(e, SessionEnded) for e in events(client))
    assert mine.state is State.ATTACHED  # the adapter detaches it (the window starts then)


def test_a_refused_resume_ends_the_clients_session_with_its_tail() -> None:
    now = 0.0
    mine = Session(SID, TOKEN, LIMITS, now)
    client = SessionProtocol(CFG, "client", now, incarnation=1, session=mine)
    server = SessionProtocol(CFG, "server", now, incarnation=2, session=None)
    client.connection_made(now)
    server.connection_made(now)
    mine.send(b"unsent", now)
    for data in client.data_to_send():
        server.receive_data(data, now)
    server.refuse(GoodbyeCode.SESSION_UNKNOWN, "unknown session", "refused", now)
    answer = server.data_to_send()
    hello, goodbye = _frames(answer)
    assert isinstance(hello, Hello) and hello.session_id == NO_SESSION_ID
    assert isinstance(goodbye, Goodbye) and goodbye.code is GoodbyeCode.SESSION_UNKNOWN
    client.receive_data(b"".join(answer), now)
    got = events(client)
    ended = [e for e in got if isinstance(e, SessionEnded)]
    assert len(ended) == 1 and ended[0].lost is not None
    assert ended[0].lost.cause is LostCause.UNKNOWN
    assert ended[0].lost.unacknowledged == (b"unsent",)
    verdicts = [e for e in got if isinstance(e, Verdict)]
    assert verdicts and verdicts[0].cause is Cause.GOODBYE


def test_a_resume_before_the_lookup_waits_for_it_and_a_second_one_is_refused() -> None:
    now = 0.0
    server = SessionProtocol(CFG, "server", now, incarnation=2, session=None)
    server.connection_made(now)
    hello = Hello(1, 1, 1.0, 5.0, 1 << 20, 1 << 20, 1, SID, TOKEN)
    server.receive_data(encode_hello(hello) + encode_resume(0, 0), now)
    assert server.verdict is None
    server.receive_data(encode_resume(0, 0), now)
    assert server.verdict is not None and "RESUME received twice" in server.verdict.detail


def _frames(data: list[bytes]) -> list[Frame]:
    return Decoder(1 << 20, sessions=True).feed(b"".join(data))


def test_a_ping_during_the_lookup_is_answered_after_the_servers_hello_and_resume() -> None:
    now = 0.0
    server = SessionProtocol(CFG, "server", now, incarnation=2, session=None)
    server.connection_made(now)
    hello = Hello(1, 1, 1.0, 5.0, 1 << 20, 1 << 20, 1, SID, TOKEN)
    server.receive_data(encode_hello(hello) + encode_resume(0, 0), now)
    now += TICK
    server.receive_data(encode_ping(9, 99), now)  # the store is slow: the client pings
    assert server.data_to_send() == []  # a PONG now would reach the client before our HELLO
    server.accept_session(Session(SID, TOKEN, LIMITS, now), now)
    frames = _frames(server.data_to_send())
    assert [type(f).__name__ for f in frames] == ["Hello", "Resume", "Pong"]


def test_goodbye_normal_with_our_messages_on_the_way_hands_them_back() -> None:
    now = 0.0
    mine, theirs = new_pair(now)
    client, server = connect(mine, theirs, now)
    events(client)
    mine.send(b"crossed the goodbye", now)
    client.data_to_send()  # written, but the server closes before it reads it
    server.close("bye", now)
    client.receive_data(b"".join(server.data_to_send()), now)
    ended = [e for e in events(client) if isinstance(e, SessionEnded)]
    assert len(ended) == 1 and ended[0].lost is not None
    assert ended[0].lost.cause is LostCause.PEER_LOST
    assert ended[0].lost.unacknowledged == (b"crossed the goodbye",)
