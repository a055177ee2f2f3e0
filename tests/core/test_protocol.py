"""Every protocol rule on the sans-IO object, with ``now += TICK`` arithmetic: no socket, no sleep.

The peer is a second ``Protocol`` (the real one, not a stand-in) or bytes built
with the production encoders; ``pump`` carries what one side hands out to the other.
"""

from __future__ import annotations

import errno
import socket

import pytest

from peerwatch.core.config import Config
from peerwatch.core.decoder import Decoder
from peerwatch.core.frames import (
    MIN_MAX_FRAME,
    PING_FRAME_SIZE,
    PROTOCOL_VERSION,
    Ack,
    Data,
    Goodbye,
    GoodbyeCode,
    Hello,
    Ping,
    Pong,
    encode_ack,
    encode_data,
    encode_goodbye,
    encode_hello,
    encode_ping,
)
from peerwatch.core.protocol import (
    FLUSH_FRAMES,
    FRAME_ROOM,
    MAX_UNREAD_CONTROL,
    Acked,
    HandshakeDone,
    HangUp,
    Protocol,
    Received,
)
from peerwatch.core.verdicts import Cause, Verdict
from peerwatch.errors import LocalProtocolError
from peerwatch.kernel.tcpinfo import tcp_info

TICK = 0.001
START = 1000.0
CFG = Config(interval=1.0, timeout=5.0, handshake_timeout=2.0)


def proto(role: str = "client", config: Config = CFG, now: float = START) -> Protocol:
    p = Protocol(config, role, now, incarnation=7)  # type: ignore[arg-type]
    p.connection_made(now)
    return p


def hello(**fields: object) -> bytes:
    values: dict[str, object] = {
        "version": PROTOCOL_VERSION,
        "incarnation": 9,
        "interval": 1.0,
        "timeout": 5.0,
        "max_frame": CFG.max_frame,
        "max_message": CFG.max_message,
    }
    values.update(fields)
    return encode_hello(Hello(**values))  # type: ignore[arg-type]


def frames(data: bytes) -> list[object]:
    return list(Decoder(64 * 1024 * 1024).feed(data))


def sent(p: Protocol, **budget: int) -> bytes:
    """What ``p`` hands out now, as one byte string."""
    return b"".join(p.data_to_send(**budget))


def pump(a: Protocol, b: Protocol, now: float) -> None:
    """Carry everything each side has to send to the other, until both are quiet."""
    for _ in range(1000):
        ab, ba = sent(a), sent(b)
        if not ab and not ba:
            return
        if ab:
            b.receive_data(ab, now)
        if ba:
            a.receive_data(ba, now)
    raise AssertionError("the two sides never went quiet")


def pair(config: Config = CFG) -> tuple[Protocol, Protocol]:
    client, server = proto("client", config), proto("server", config)
    pump(client, server, START)
    assert isinstance(client.events_received()[0], HandshakeDone)
    assert isinstance(server.events_received()[0], HandshakeDone)
    return client, server


def run_timers(p: Protocol, until: float) -> None:
    """Run ``p``'s timer at each deadline it asks for, up to ``until``, as an adapter does."""
    for _ in range(100_000):
        timer = p.get_timer()
        if timer is None or timer > until:
            return
        p.handle_timer(timer)
        sent(p)
    raise AssertionError("the protocol asked for more than 100,000 timers: it spins")


def verdict_of(p: Protocol) -> Verdict:
    found = [e for e in p.events_received() if isinstance(e, Verdict)]
    assert found == [p.verdict]
    assert p.verdict is not None
    return p.verdict


def goodbye_in(data: bytes) -> Goodbye:
    found = [f for f in frames(data) if isinstance(f, Goodbye)]
    assert len(found) == 1, frames(data)
    return found[0]


# --- handshake ------------------------------------------------------------


def test_our_hello_goes_out_first_and_the_timer_starts_with_the_connection() -> None:
    p = Protocol(CFG, "client", START, incarnation=7)
    assert p.get_timer() is None and p.data_to_send() == []
    p.connection_made(START)
    (ours,) = frames(sent(p))
    assert isinstance(ours, Hello) and ours.incarnation == 7 and ours.max_frame == CFG.max_frame
    assert p.get_timer() == START + CFG.handshake_timeout


def test_handshake_then_the_liveness_deadline_replaces_the_handshake_one() -> None:
    client, server = pair()
    assert client.peer_hello is not None and client.peer_hello.incarnation == 7
    assert client.get_timer() == pytest.approx(START + CFG.interval)
    # the accepting side lets the connecting side ping first (liveness rule 6)
    timer = server.get_timer()
    assert timer is not None and timer > START + CFG.interval


def test_get_timer_has_no_side_effect() -> None:
    client, _ = pair()
    client.receive_data(encode_ack(0), START + 0.5)
    first = client.get_timer()
    assert [client.get_timer() for _ in range(3)] == [first] * 3
    assert client.events_received() == []


def test_the_first_frame_must_be_hello() -> None:
    p = proto("server")
    sent(p)
    p.receive_data(encode_ping(1, 2), START + TICK)
    verdict = verdict_of(p)
    assert verdict.cause is Cause.PROTOCOL and "expected HELLO first, got PING" in verdict.detail
    assert goodbye_in(sent(p)).code is GoodbyeCode.PROTOCOL_ERROR


def test_hello_twice_is_a_violation() -> None:
    _client, server = pair()
    server.receive_data(hello(), START + TICK)
    assert verdict_of(server).detail == "HELLO received twice"
    assert HangUp(abort=False) not in server.events_received()  # handed out with the verdict


def test_silent_peer_fails_the_handshake_at_its_deadline_not_a_tick_before() -> None:
    p = proto("server")
    sent(p)
    deadline = START + CFG.handshake_timeout
    p.handle_timer(deadline - TICK)
    assert p.verdict is None
    p.handle_timer(deadline)
    verdict = verdict_of(p)
    assert verdict.cause is Cause.SILENT and p.failed_in_handshake  # no TCP_INFO: SILENT
    assert verdict.silent_for == pytest.approx(CFG.handshake_timeout)
    assert goodbye_in(sent(p)).code is GoodbyeCode.HANDSHAKE_TIMEOUT
    assert p.get_timer() is None


def test_a_peer_that_sent_half_a_hello_is_a_protocol_failure() -> None:
    p = proto("server")
    p.receive_data(hello()[:10], START + TICK)
    p.handle_timer(START + CFG.handshake_timeout)
    verdict = verdict_of(p)
    assert verdict.cause is Cause.PROTOCOL and "no valid HELLO within 2.0 s" in verdict.detail
    assert not p.failed_in_handshake


def test_a_hello_below_the_frame_floor_is_refused() -> None:
    p = proto("server")
    p.receive_data(hello(max_frame=MIN_MAX_FRAME - 1), START + TICK)
    assert "below the floor" in verdict_of(p).detail


# --- pings ----------------------------------------------------------------


def test_a_ping_alone_is_answered_by_its_pong_on_the_fast_path() -> None:
    _client, server = pair()
    ping = encode_ping(5, 123456)
    assert len(ping) == PING_FRAME_SIZE
    server.receive_data(ping, START + TICK)
    assert frames(sent(server)) == [Pong(5, 123456)]
    assert server.pings_received == 1


def test_answer_ping_hands_out_the_pong_at_once_and_counts_as_receive_data_would() -> None:
    _client, fast = pair()
    _client2, slow = pair()
    ping = encode_ping(5, 123456)
    pong = fast.answer_ping(memoryview(ping), START + TICK)
    slow.receive_data(ping, START + TICK)
    assert pong is not None and frames(bytes(pong)) == frames(sent(slow)) == [Pong(5, 123456)]
    assert sent(fast) == b""  # written by the caller, not queued as well
    assert fast.events_received() == slow.events_received() == []
    for field in ("pings_received", "bytes_in", "bytes_out"):
        assert getattr(fast, field) == getattr(slow, field), field
    assert fast.liveness.last_heard == slow.liveness.last_heard == START + TICK
    assert fast.get_timer() == slow.get_timer()


@pytest.mark.parametrize(
    "situation", ["before hello", "ack due", "control queued", "writing paused", "verdict"]
)
def test_answer_ping_declines_whenever_the_ordinary_path_has_something_first(
    situation: str,
) -> None:
    if situation == "before hello":
        p = proto("server")
    else:
        p, peer = pair()
        if situation == "ack due":
            peer.send(b"m")
            p.receive_data(sent(peer), START + TICK)
            p.events_received()
            p.consumed(1, START + TICK)
        elif situation == "control queued":
            p.handle_timer(START + CFG.interval)  # a PING of ours waits in the queue
        elif situation == "writing paused":
            p.pause_writing()
        else:
            p.close("bye", START + TICK)
    before = (p.pings_received, p.bytes_in, p.liveness.last_heard)
    assert p.answer_ping(encode_ping(1, 2), START + 2 * TICK) is None
    assert (p.pings_received, p.bytes_in, p.liveness.last_heard) == before  # nothing happened


def test_answer_ping_leaves_a_ping_over_the_limit_to_the_ordinary_path() -> None:
    _client, server = pair()
    now = START
    for seq in range(CFG.max_pings_per_interval):
        now += TICK
        assert server.answer_ping(encode_ping(seq, 0), now) is not None
    assert server.answer_ping(encode_ping(99, 0), now + TICK) is None
    server.receive_data(encode_ping(99, 0), now + TICK)
    assert verdict_of(server).cause is Cause.PROTOCOL
    assert goodbye_in(sent(server)).code is GoodbyeCode.TOO_MANY_PINGS


def test_one_liveness_machine_per_connection_started_again_at_hello() -> None:
    client = proto("client")
    server = proto("server")
    machines = client.liveness, server.liveness
    pump(client, server, START + 0.5)
    assert (client.liveness, server.liveness) == machines
    # started on the handshake's terms: heard at HELLO, the accepting side answers later
    assert client.liveness.last_heard == server.liveness.last_heard == START + 0.5
    assert client.get_timer() == START + 0.5 + CFG.interval
    assert server.get_timer() > START + 0.5 + CFG.interval


def test_a_ping_among_other_frames_is_answered_too() -> None:
    _client, server = pair()
    server.receive_data(encode_ping(5, 1) + encode_ping(6, 2)[:3], START + TICK)
    server.receive_data(encode_ping(6, 2)[3:], START + 2 * TICK)
    assert frames(sent(server)) == [Pong(5, 1), Pong(6, 2)]


def test_pings_over_the_rate_limit_end_in_goodbye_too_many_pings() -> None:
    _client, server = pair()
    now = START
    for seq in range(CFG.max_pings_per_interval):
        now += TICK
        server.receive_data(encode_ping(seq, 0), now)
    assert server.verdict is None
    sent(server)
    server.receive_data(encode_ping(99, 0), now + TICK)  # one more, same window
    verdict = verdict_of(server)
    assert verdict.cause is Cause.PROTOCOL and "too many pings" in verdict.detail
    assert goodbye_in(sent(server)).code is GoodbyeCode.TOO_MANY_PINGS


def test_the_rate_limit_window_restarts() -> None:
    _client, server = pair()
    now = START
    for _ in range(5):
        for seq in range(CFG.max_pings_per_interval):
            server.receive_data(encode_ping(seq, 0), now + seq * TICK)
        now += CFG.interval
    assert server.verdict is None


def test_the_client_pings_after_interval_and_times_the_pong() -> None:
    client, server = pair()
    now = START + CFG.interval
    client.handle_timer(now - TICK)
    assert sent(client) == b""
    client.handle_timer(now)
    (ping,) = frames(data := sent(client))
    assert isinstance(ping, Ping) and client.pings_sent == 1
    server.receive_data(data, now + 10 * TICK)
    client.receive_data(sent(server), now + 20 * TICK)
    assert client.liveness.rtt == pytest.approx(20 * TICK)


def test_a_pong_counts_only_for_the_outstanding_ping() -> None:
    client, _server = pair()
    now = START + CFG.interval
    client.handle_timer(now)
    (ping,) = frames(sent(client))
    assert isinstance(ping, Ping)
    forged = encode_ping(ping.seq + 1, ping.stamp)
    forged = forged[:4] + b"\x05" + forged[5:]  # a PONG for a PING never sent
    client.receive_data(forged, now + TICK)
    assert client.liveness.rtt is None and client.verdict is None


# --- silence --------------------------------------------------------------


def test_a_silent_peer_is_dead_at_timeout_not_a_tick_before() -> None:
    client, _ = pair()
    run_timers(client, START + CFG.timeout - TICK)
    assert client.verdict is None and client.pings_sent == 4
    assert client.get_timer() == START + CFG.timeout
    client.handle_timer(START + CFG.timeout)
    verdict = verdict_of(client)
    assert verdict.cause is Cause.SILENT
    assert verdict.detail == "nothing from the peer for 5.000 s, not even TCP acknowledgements"
    assert goodbye_in(sent(client)).reason == "SILENT: peer silent"
    assert verdict.detected_at == START + CFG.timeout


def test_our_own_stall_is_not_blamed_on_the_peer() -> None:
    client, _ = pair()
    client.handle_timer(START + 60.0)  # we did not run for a minute
    assert client.verdict is None and client.liveness.stalls == 1
    assert frames(sent(client))[0].__class__ is Ping  # a fresh chance at once


def test_the_kernel_probe_tells_hung_from_silent() -> None:
    # a real loopback TCP pair, idle: our bytes are acknowledged, nothing retransmits
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        ours = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
        try:
            ours.sendall(b"x")  # acknowledged by the peer's kernel, never read by its app
            theirs.recv(0)
            p = Protocol(CFG, "client", START, incarnation=1, kernel=lambda: tcp_info(ours))
            p.connection_made(START)
            p.receive_data(hello(), START)
            run_timers(p, START + CFG.timeout)
            verdict = verdict_of(p)
            assert verdict.cause is Cause.HUNG, verdict.tcp_info
            assert "its kernel still acknowledges" in verdict.detail
        finally:
            ours.close()
            theirs.close()
    finally:
        listener.close()


# --- delivery -------------------------------------------------------------


def test_consumed_messages_are_acked_cumulatively_once_per_pass() -> None:
    client, server = pair()
    for payload in (b"a", b"bb", b"ccc"):
        client.send(payload)
    server.receive_data(sent(client), START + TICK)
    assert server.events_received() == [Received([b"a", b"bb", b"ccc"])]  # one per read
    assert sent(server) == b""  # received is not consumed: no ACK yet
    server.consumed(1, START + TICK)
    server.consumed(2, START + TICK)
    assert frames(sent(server)) == [Ack(2)]
    server.consumed(3, START + TICK)
    ack = sent(server)
    assert frames(ack) == [Ack(3)]
    client.receive_data(ack, START + 2 * TICK)
    assert client.events_received() == [Acked(3)] and client.in_flight == 0


def test_messages_told_consumed_together_count_as_each_told_alone() -> None:
    config = CFG.with_(recv_queue=4)
    client, server = pair(config)
    for i in range(4):
        client.send(bytes([i]) * (i + 1))
    server.receive_data(sent(client), START + TICK)
    assert server.reading_paused and server.held_bytes >= 10
    held = server.held_bytes
    server.consumed(1 + 2 + 3, START + 2 * TICK, count=3)  # an adapter's one report per pass
    assert not server.reading_paused and not server.liveness.paused
    assert server.unconsumed == 1 and server.held_bytes == held - 6
    assert frames(sent(server)) == [Ack(3)]


def test_an_ack_for_more_than_was_sent_is_a_violation() -> None:
    client, _server = pair()
    client.send(b"x")  # queued, not yet handed out
    client.receive_data(encode_ack(1), START + TICK)
    assert "only 0 were ever sent" in verdict_of(client).detail


def test_the_receive_window_pauses_reading_and_half_of_it_free_resumes() -> None:
    config = CFG.with_(recv_queue=4)
    client, server = pair(config)
    for i in range(4):
        client.send(bytes([i]))
    server.receive_data(sent(client), START + TICK)
    assert server.reading_paused and server.liveness.paused
    server.consumed(1, START + 2 * TICK)
    assert server.reading_paused
    server.consumed(1, START + 2 * TICK)
    assert not server.reading_paused and not server.liveness.paused


def test_a_large_message_goes_in_chunks_that_fit_the_peers_max_frame() -> None:
    small = CFG.with_(max_frame=MIN_MAX_FRAME, chunk_size=MIN_MAX_FRAME - FRAME_ROOM)
    client, server = proto("client"), proto("server", small)
    pump(client, server, START)
    payload = bytes(range(256)) * 100  # 25,600 bytes
    seq = client.send(payload)
    data = sent(client, budget=2 * MIN_MAX_FRAME + 1)  # over by less than a frame
    chunks = frames(data)
    assert all(isinstance(c, Data) and c.more for c in chunks) and len(chunks) == 3
    assert all(len(c.payload) <= MIN_MAX_FRAME - FRAME_ROOM for c in chunks)  # type: ignore[attr-defined]
    assert client.outbound.sent_through == 0  # not sent until its last chunk is out
    data += sent(client)
    assert client.outbound.sent_through == seq
    server.receive_data(data, START + TICK)
    assert Received([payload]) in server.events_received()


def test_one_pass_writes_at_most_flush_frames_data_frames() -> None:
    client, _server = pair()
    for _ in range(FLUSH_FRAMES + 10):
        client.send(b"m")
    first = frames(sent(client))
    assert len(first) == FLUSH_FRAMES
    assert len(frames(sent(client))) == 10


def test_budget_zero_hands_out_control_frames_only() -> None:
    client, _server = pair()
    client.send(b"data")
    client.receive_data(encode_ping(1, 1), START + TICK)
    assert frames(sent(client, budget=0)) == [Pong(1, 1)]
    assert client.data_pending


def test_a_message_over_the_peers_max_message_is_refused_before_it_is_queued() -> None:
    client, server = proto("client"), proto("server", CFG.with_(max_message=100))
    pump(client, server, START)
    with pytest.raises(LocalProtocolError, match="exceeds the peer's max_message"):
        client.send(bytes(101))
    assert client.in_flight == 0


def test_a_message_over_our_max_message_ends_in_goodbye_message_too_big() -> None:
    small = CFG.with_(max_message=100)
    server = proto("server", small)
    server.receive_data(hello() + encode_data(1, bytes(101)), START + TICK)
    verdict = verdict_of(server)
    assert verdict.cause is Cause.PROTOCOL and "exceeds max_message (100 bytes)" in verdict.detail
    assert goodbye_in(sent(server)).code is GoodbyeCode.MESSAGE_TOO_BIG


def test_has_room_follows_send_queue_and_send_buffer() -> None:
    client, _ = pair(CFG.with_(send_queue=2, send_buffer=100))
    assert client.has_room(1000)  # alone, a message larger than the buffer still goes
    client.send(bytes(60))
    assert not client.has_room(41) and client.has_room(40)
    client.send(bytes(10))
    assert not client.has_room(1)  # send_queue reached


def test_a_peer_that_reads_nothing_is_hung_past_the_unread_control_bound() -> None:
    _client, server = pair()
    server.pause_writing()  # the transport is full: the peer does not read
    now = START
    window = server.liveness.ping_window
    pongs = 0
    for _ in range(MAX_UNREAD_CONTROL // (PING_FRAME_SIZE * CFG.max_pings_per_interval) + 2):
        for seq in range(CFG.max_pings_per_interval):
            server.receive_data(encode_ping(seq, 0), now)
        pongs += len(sent(server, budget=0)) // PING_FRAME_SIZE
        now += window
        if server.verdict is not None:
            break
    verdict = verdict_of(server)
    assert verdict.cause is Cause.HUNG and "reads nothing" in verdict.detail
    batch = CFG.max_pings_per_interval * PING_FRAME_SIZE  # counted per data_to_send
    assert pongs * PING_FRAME_SIZE > MAX_UNREAD_CONTROL >= pongs * PING_FRAME_SIZE - batch


def test_unread_control_is_forgotten_when_the_peer_reads_again() -> None:
    _client, server = pair()
    now = START
    for _ in range(2 * MAX_UNREAD_CONTROL // (PING_FRAME_SIZE * CFG.max_pings_per_interval)):
        server.pause_writing()
        for seq in range(CFG.max_pings_per_interval):
            server.receive_data(encode_ping(seq, 0), now)
        sent(server, budget=0)
        server.resume_writing()
        now += server.liveness.ping_window
    assert server.verdict is None


def test_hangup_abort_is_handed_out_with_the_hung_verdict() -> None:
    _client, server = pair()
    server.pause_writing()
    now = START
    events: list[object] = []
    for _ in range(MAX_UNREAD_CONTROL // (PING_FRAME_SIZE * CFG.max_pings_per_interval) + 2):
        for seq in range(CFG.max_pings_per_interval):
            server.receive_data(encode_ping(seq, 0), now)
        sent(server, budget=0)
        events += server.events_received()
        now += server.liveness.ping_window
        if server.verdict is not None:
            break
    assert events[-2:] == [server.verdict, HangUp(abort=True)]


# --- endings --------------------------------------------------------------


def test_goodbye_reason_is_escaped_in_the_verdict() -> None:
    client, _server = pair()
    client.receive_data(encode_goodbye(GoodbyeCode.GOING_AWAY, "bye\nFAKE LOG LINE"), START + 1)
    verdict = verdict_of(client)
    assert verdict.cause is Cause.GOODBYE and "\n" not in verdict.detail
    assert verdict.goodbye_reason == "bye\\nFAKE LOG LINE"
    assert "GOING_AWAY" in verdict.detail


def test_close_acks_what_was_consumed_then_says_goodbye() -> None:
    client, server = pair()
    client.send(b"one")
    server.receive_data(sent(client), START + TICK)
    server.consumed(3, START + TICK)
    server.close("done", START + 2 * TICK)
    assert frames(sent(server)) == [Ack(1), Goodbye(GoodbyeCode.NORMAL, "done")]
    verdict = verdict_of(server)
    assert verdict.cause is Cause.LOCAL and verdict.detail == "closed by this side: done"
    assert verdict.detected_at == START + 2 * TICK


def test_undelivered_messages_are_in_the_verdict() -> None:
    client, _server = pair()
    client.send(b"lost")
    sent(client)
    client.receive_eof(START + 1)
    verdict = verdict_of(client)
    assert verdict.cause is Cause.EOF and verdict.undelivered == (b"lost",)


@pytest.mark.parametrize(
    ("exc", "cause", "name"),
    [
        (
            ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
            Cause.RESET,
            "ECONNRESET",
        ),
        (TimeoutError(errno.ETIMEDOUT, "Connection timed out"), Cause.TIMEOUT, "ETIMEDOUT"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), Cause.UNREACHABLE, "EHOSTUNREACH"),
        (None, Cause.EOF, None),
    ],
)
def test_connection_lost_translates_the_error_once(
    exc: BaseException | None, cause: Cause, name: str | None
) -> None:
    client, _ = pair()
    client.connection_lost(exc, START + 1)
    verdict = verdict_of(client)
    assert (verdict.cause, verdict.errno) == (cause, name)
    assert client.get_timer() is None


def test_a_frame_cut_by_the_end_is_named_in_the_verdict() -> None:
    client, _ = pair()
    client.receive_data(encode_data(1, b"12345")[:8], START + TICK)
    client.receive_eof(START + 2 * TICK)
    assert "mid-message: 8 bytes" in verdict_of(client).detail


def test_the_wall_offset_dates_the_verdict() -> None:
    p = Protocol(CFG, "client", START, incarnation=1, wall_offset=1e9)
    p.connection_made(START)
    p.connection_lost(None, START + 3)
    assert verdict_of(p).detected_wall == 1e9 + START + 3


def test_nothing_is_read_or_sent_after_the_verdict() -> None:
    client, _server = pair()
    client.receive_eof(START + 1)
    client.events_received()
    client.receive_data(encode_ping(1, 1), START + 2)
    assert sent(client) == b"" and client.events_received() == []
    with pytest.raises(LocalProtocolError):
        client.send(b"late")
