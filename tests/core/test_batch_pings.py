"""``batch_pings`` (liveness rule 6, batched) under a fake clock: the accepting side pings
ahead of its peers on a grid every connection shares, its peers never ping, and death
is judged exactly as without it."""

from __future__ import annotations

import heapq
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.core.config import Config
from peerwatch.core.frames import (
    PING_BODY,
    PING_FRAME_SIZE,
    GoodbyeCode,
    encode_ping,
    encode_pong,
)
from peerwatch.core.liveness import GRID_STEPS, LEAD_STEPS, Action, Liveness
from peerwatch.core.protocol import HandshakeDone, Protocol
from peerwatch.core.verdicts import Cause

START = 1000.0
ONE_WAY = 0.0002  # loopback-like delay on the fake wire


def config(**fields: object) -> Config:
    return Config(**{"interval": 10.0, "timeout": 30.0, **fields})  # type: ignore[arg-type]


class Wire:
    """Two sides of one connection on a fake clock: bytes arrive ``delay`` after they are
    handed out; each side's timer runs exactly at the deadline it asks for."""

    def __init__(self, client: Config, server: Config, opened: float = START) -> None:
        self.now = opened
        self.sides = {
            "client": Protocol(client, "client", opened, incarnation=1),
            "server": Protocol(server, "server", opened, incarnation=2),
        }
        self.pings: dict[str, list[float]] = {"client": [], "server": []}
        self.frozen: set[str] = set()  # a frozen side neither reads, writes nor runs timers
        self._queue: list[tuple[float, int, str, bytes]] = []
        self._order = itertools.count()
        for side in self.sides.values():
            side.connection_made(opened)
        self._flush()
        self.run_until(opened + 0.01)
        for side in self.sides.values():
            assert any(isinstance(e, HandshakeDone) for e in side.events_received())

    def _flush(self) -> None:
        for name, side in self.sides.items():
            data = b"".join(side.data_to_send())
            if data and name not in self.frozen:
                other = "server" if name == "client" else "client"
                heapq.heappush(self._queue, (self.now + ONE_WAY, next(self._order), other, data))

    def run_until(self, end: float) -> None:
        for _ in range(1_000_000):  # bounded: a machine that spins fails the test
            timers = [
                (timer, name)
                for name, side in self.sides.items()
                if name not in self.frozen and (timer := side.get_timer()) is not None
            ]
            timer, name = min(timers, default=(float("inf"), ""))
            arrival = self._queue[0][0] if self._queue else float("inf")
            if min(timer, arrival) > end:
                self.now = end
                return
            if arrival <= timer:
                self.now, _, to, data = heapq.heappop(self._queue)
                if to not in self.frozen:
                    side = self.sides[to]
                    if len(data) == PING_FRAME_SIZE and side.take_pong(data, self.now):
                        pass
                    else:
                        side.receive_data(data, self.now)
            else:
                self.now = timer
                side = self.sides[name]
                before = side.pings_sent
                side.liveness.armed = timer  # as the adapter's timer queue writes it (rule 4)
                side.handle_timer(timer)
                if side.pings_sent != before:
                    self.pings[name].append(timer)
            self._flush()
        raise AssertionError("more than a million steps: something spins")


def test_the_batched_side_pings_and_its_peer_never_does() -> None:
    wire = Wire(config(), config(batch_pings=True))
    wire.run_until(START + 1000.0)  # 100 intervals
    server, client = wire.sides["server"], wire.sides["client"]
    assert wire.pings["client"] == []
    assert client.pings_sent == 0 and server.pings_received == 0
    period = 10.0 - LEAD_STEPS * 10.0 / GRID_STEPS
    assert len(wire.pings["server"]) == pytest.approx(1000.0 / period, abs=1)
    assert server.verdict is None and client.verdict is None
    assert server.liveness.pongs_received == len(wire.pings["server"])
    assert server.liveness.rtt == pytest.approx(2 * ONE_WAY)  # the PONGs are timed


def test_without_it_the_connecting_side_pings_and_the_accepting_side_only_answers() -> None:
    wire = Wire(config(), config())
    wire.run_until(START + 1000.0)
    assert wire.pings["server"] == []
    assert len(wire.pings["client"]) == pytest.approx(100, abs=1)


def test_the_pings_of_every_connection_fall_on_one_shared_grid() -> None:
    grid = 10.0 / GRID_STEPS
    times: set[float] = set()
    for opened in (START, START + 0.123, START + 3.7, START + 9.99):
        wire = Wire(config(), config(batch_pings=True), opened)
        wire.run_until(START + 100.0)
        assert wire.pings["server"]
        for at in wire.pings["server"]:
            assert at / grid == pytest.approx(round(at / grid), abs=1e-6)
        times.update(round(at / grid) for at in wire.pings["server"])
    # four connections opened apart ping on at most a handful of grid points per interval
    assert len(times) <= 4 * 11


def test_the_first_ping_comes_ahead_of_the_peers_own_by_at_least_one_and_a_half_steps() -> None:
    grid = 10.0 / GRID_STEPS
    for k in range(64):
        opened = START + k * grid / 16
        wire = Wire(config(), config(batch_pings=True), opened)
        wire.run_until(opened + 10.0)
        first = wire.pings["server"][0]
        assert first - opened <= 10.0 - 1.5 * grid + 0.01
        assert first - opened >= 10.0 - 2.5 * grid - 0.01


@settings(max_examples=60, deadline=None)
@given(lateness=st.floats(min_value=0.0, max_value=0.49))
def test_a_pass_that_runs_late_by_under_half_a_step_does_not_drift(lateness: float) -> None:
    live = Liveness(config(batch_pings=True), START)
    live.start(START)
    grid, period = live.grid, live.period
    at = live.next_deadline()
    for _ in range(20):
        now = at + lateness * grid  # the timer pass reached this connection late
        assert live.handle_timer(now) is Action.PING
        seq, stamp = live.ping_sent(now)
        live.on_pong(now + 0.001, seq, stamp)  # the peer is alive: only pings are due
        following = live.next_deadline()
        assert following == pytest.approx(at + period)
        at = following


def test_a_peer_with_a_shorter_interval_sets_the_period() -> None:
    wire = Wire(config(interval=2.0, timeout=30.0), config(batch_pings=True))
    wire.run_until(START + 100.0)
    assert wire.pings["client"] == []
    gaps = [b - a for a, b in itertools.pairwise(wire.pings["server"])]
    assert gaps and all(g == pytest.approx(2.0 - LEAD_STEPS * 2.0 / GRID_STEPS) for g in gaps)


def test_data_from_the_peer_holds_our_pings_back_as_without_it() -> None:
    wire = Wire(config(), config(batch_pings=True))
    client = wire.sides["client"]
    for k in range(50):  # a message every second for 50 s
        wire.run_until(START + 1.0 + k)
        client.send(b"x")
        wire._flush()
    wire.run_until(START + 51.0)
    assert wire.pings["server"] == []  # the client pings: it hears nothing (no ACK asked)


def test_a_frozen_peer_is_declared_dead_at_its_last_pong_plus_timeout() -> None:
    wire = Wire(config(), config(batch_pings=True))
    wire.run_until(START + 95.0)
    last_heard = wire.sides["server"].liveness.last_heard
    wire.frozen.add("client")
    wire.run_until(last_heard + 30.0 - 0.001)
    server = wire.sides["server"]
    assert server.verdict is None
    wire.run_until(last_heard + 30.0 + 0.001)
    assert server.verdict is not None and server.verdict.cause is Cause.SILENT
    assert server.verdict.silent_for == pytest.approx(30.0, abs=0.002)


def test_the_peer_of_a_frozen_batched_server_starts_pinging_and_judges_it() -> None:
    wire = Wire(config(), config(batch_pings=True))
    wire.run_until(START + 95.0)
    wire.frozen.add("server")
    last_heard = wire.sides["client"].liveness.last_heard
    wire.run_until(last_heard + 31.0)
    client = wire.sides["client"]
    assert len(wire.pings["client"]) >= 2  # its own cadence again: rule 6 without the lead
    assert client.verdict is not None and client.verdict.cause is Cause.SILENT


def test_take_pong_leaves_the_state_receive_data_would() -> None:
    states = []
    for fast in (True, False):
        wire = Wire(config(), config(batch_pings=True))
        wire.run_until(START + 9.5)
        server = wire.sides["server"]
        server.handle_timer(server.get_timer() or 0.0)
        ping = b"".join(server.data_to_send())
        assert ping  # the PING, echoed as its PONG
        pong = encode_pong(*PING_BODY.unpack_from(ping, 5))
        now = wire.now + 0.25
        if fast:
            assert server.take_pong(memoryview(pong), now)
        else:
            server.receive_data(pong, now)
        live = server.liveness
        states.append(
            (
                server.bytes_in,
                live.last_heard,
                live.rtt,
                live.pongs_received,
                live.due,
                live.pong_due,
            )
        )
        assert server.events_received() == []
    assert states[0] == states[1]


@pytest.mark.parametrize("situation", ["a ping", "before hello", "partial frame", "verdict"])
def test_take_pong_declines_what_is_not_a_lone_pong(situation: str) -> None:
    wire = Wire(config(), config(batch_pings=True))
    server = wire.sides["server"]
    data = encode_pong(1, 2)
    if situation == "a ping":
        data = encode_ping(1, 2)
    elif situation == "before hello":
        server = Protocol(config(batch_pings=True), "server", START, incarnation=3)
        server.connection_made(START)
    elif situation == "partial frame":
        server.receive_data(encode_pong(1, 2)[:3], wire.now)
    else:
        server.leave(GoodbyeCode.NORMAL, "bye", "test", wire.now)
    before = server.bytes_in
    assert not server.take_pong(data, wire.now + 0.1)
    assert server.bytes_in == before


#: Any state of a started machine: which side batches, when it last heard, saw traffic and
#: pinged (seconds after START), and whether reading is paused.
STATES = st.tuples(
    st.booleans(),
    st.floats(min_value=0.0, max_value=40.0),
    st.floats(min_value=0.0, max_value=40.0),
    st.floats(min_value=0.0, max_value=40.0),
    st.booleans(),
)


def liveness_in(state: tuple[bool, float, float, float, bool]) -> Liveness:
    batch, heard, traffic, pinged, paused = state
    live = Liveness(config(batch_pings=batch), START)
    live.start(START, peer_interval=10.0)
    live.last_heard, live.last_traffic, live.last_ping = (
        START + heard,
        START + traffic,
        START + pinged,
    )
    live.paused = paused
    live._refresh()  # as every event that moves these does: ``due`` follows them
    return live


@settings(max_examples=300, deadline=None)
@given(
    state=STATES,
    armed_late=st.floats(min_value=-1.0, max_value=20.0),
    at=st.floats(min_value=0.0, max_value=60.0),
)
def test_take_ping_is_handle_timer_when_only_a_ping_is_due(
    state: tuple[bool, float, float, float, bool], armed_late: float, at: float
) -> None:
    """``take_ping`` is ``handle_timer``, ``ping_sent`` and ``next_deadline`` written out in
    one call: it answers exactly when those would only ping, leaves exactly their state, and
    changes nothing when it declines. By hypothesis over the whole state."""
    fast, slow = liveness_in(state), liveness_in(state)
    now = START + at
    fast.armed = slow.armed = now - armed_late
    before = snapshot(fast)
    taken = fast.take_ping(now)
    stalls = slow.stalls
    action = slow.handle_timer(now)
    only_ping = action is Action.PING and slow.stalls == stalls
    assert (taken is not None) == only_ping
    if taken is None:
        assert snapshot(fast) == before
        return
    assert taken == slow.ping_sent(now)
    slow.next_deadline()
    assert snapshot(fast) == snapshot(slow)


def snapshot(live: Liveness) -> dict[str, object]:
    """Every slot of the machine, but its arrival window (a fixed policy shares one)."""
    return {name: getattr(live, name) for name in Liveness.__slots__ if name != "_gaps"}


@settings(max_examples=300, deadline=None)
@given(state=STATES, later=st.floats(min_value=0.0, max_value=40.0))
def test_a_pong_leaves_due_where_recomputing_it_would(
    state: tuple[bool, float, float, float, bool], later: float
) -> None:
    """``on_pong`` skips ``_refresh`` while ``due`` is the PING: a later ``dead_at`` cannot
    move it. By hypothesis over the state, against the recomputed ``due``."""
    live = liveness_in(state)
    live.on_pong(max(live.last_heard, START + later), 0, 0)
    kept = (live.due, live.due_is_ping)
    live._refresh()
    assert kept == (live.due, live.due_is_ping)


def test_ping_due_writes_what_handle_timer_would_have_queued() -> None:
    outputs = []
    for fast in (True, False):
        wire = Wire(config(), config(batch_pings=True))
        wire.run_until(START + 9.0)
        server = wire.sides["server"]
        at = server.get_timer()
        assert at is not None
        server.liveness.armed = at
        if fast:
            ping = server.ping_due(at)
            assert ping is not None and server.data_to_send() == []
        else:
            server.handle_timer(at)
            ping = b"".join(server.data_to_send())
        live = server.liveness
        outputs.append((bytes(ping), server.pings_sent, server.bytes_out, live.due, live.armed))
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    "situation", ["not due", "before hello", "control queued", "ack due", "paused", "verdict"]
)
def test_ping_due_declines_whenever_more_than_a_ping_is_due(situation: str) -> None:
    wire = Wire(config(), config(batch_pings=True))
    wire.run_until(START + 9.0)
    server = wire.sides["server"]
    at = server.get_timer() or 0.0
    server.liveness.armed = at
    if situation == "not due":
        at -= 0.1
    elif situation == "before hello":
        server = Protocol(config(batch_pings=True), "server", START, incarnation=3)
        server.connection_made(START)
    elif situation == "control queued":
        server.receive_data(encode_ping(1, 2) + encode_ping(2, 3), wire.now)  # two PONGs queued
    elif situation == "ack due":
        wire.sides["client"].send(b"x")
        wire._flush()
        wire.run_until(wire.now + 0.01)
        server.consumed(1, wire.now, 1)
    elif situation == "paused":
        server.pause_writing()
    else:
        server.leave(GoodbyeCode.NORMAL, "bye", "test", wire.now)
    before = (server.pings_sent, server.bytes_out)
    assert server.ping_due(at) is None
    assert (server.pings_sent, server.bytes_out) == before
