"""The liveness machine under a fake clock: every timing rule, no sleeping."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.core.config import Config
from peerwatch.core.liveness import Action, Liveness, phi


class Clock:
    """Drives a Liveness the way the event loop does: handle_timer exactly at its deadline."""

    def __init__(self, live: Liveness, now: float = 100.0) -> None:
        self.live = live
        self.now = now
        self.pings: list[float] = []

    def run_until(self, end: float, *, rtt: float | None = None) -> Action:
        """Fire timers up to ``end``; the peer answers each ping after ``rtt`` if given."""
        pending_pong: float | None = None
        echo = (0, 0)  # seq and stamp of the last ping, echoed by the peer
        for _ in range(100_000):  # bounded: a machine that spins fails the test, not CI
            deadline = self.live.next_deadline()
            if pending_pong is not None and pending_pong <= min(deadline, end):
                self.now = pending_pong
                self.live.on_pong(pending_pong, *echo)
                pending_pong = None
                continue
            if deadline > end:
                self.now = end
                return Action.NONE
            self.now = deadline
            action = self.live.handle_timer(deadline)
            if action is Action.DEAD:
                return action
            if action is Action.PING:
                echo = self.live.ping_sent(self.now)
                self.pings.append(self.now)
                if rtt is not None:
                    pending_pong = self.now + rtt
        raise AssertionError("the machine asked for more than 100,000 timers: it spins")


def machine(**fields: object) -> tuple[Liveness, Clock]:
    cfg = Config(**{"interval": 1.0, "timeout": 5.0, **fields})  # type: ignore[arg-type]
    live = Liveness(cfg, 100.0)
    return live, Clock(live)


def test_pings_on_a_steady_grid_that_does_not_drift_by_the_rtt() -> None:
    _live, clock = machine()
    assert clock.run_until(110.0, rtt=0.3) is Action.NONE  # pongs keep it alive
    assert clock.pings == pytest.approx([101.0 + k for k in range(10)])


def test_no_ping_while_traffic_flows() -> None:
    live, clock = machine()
    for t in range(1, 30):
        assert clock.run_until(100.0 + t * 0.5) is Action.NONE
        live.on_receive(100.0 + t * 0.5)
    assert clock.pings == []
    assert live.next_ping_at() == pytest.approx(114.5 + 1.0)


def test_dead_after_timeout_of_silence_and_not_before() -> None:
    live, clock = machine()
    assert clock.run_until(104.999) is Action.NONE
    assert clock.run_until(106.0) is Action.DEAD
    assert clock.now == pytest.approx(105.0)
    assert live.silent_for(clock.now) == pytest.approx(5.0)
    assert len(clock.pings) == 4  # at 101, 102, 103, 104: all unanswered


def test_any_inbound_byte_restarts_the_deadline() -> None:
    live, clock = machine()
    clock.run_until(104.0)
    live.on_receive(104.5)
    assert live.dead_at() == pytest.approx(109.5)
    assert clock.run_until(109.4) is Action.NONE
    assert clock.run_until(110.0) is Action.DEAD


def test_a_pong_is_life_and_measures_rtt() -> None:
    live, _ = machine()
    seq, stamp = live.ping_sent(101.0)
    assert live.on_pong(101.25, seq, stamp) == pytest.approx(0.25)
    assert live.rtt == pytest.approx(0.25)
    assert live.dead_at() == pytest.approx(106.25)


def test_a_stall_of_our_own_process_is_not_blamed_on_the_peer() -> None:
    live, clock = machine()
    clock.run_until(103.0)
    live.next_deadline()  # armed for 104.0
    # the loop was blocked: the timer fires 6 s late, past the peer's dead_at of 105
    assert live.handle_timer(110.0) is Action.PING  # a fresh chance: ping at once
    assert live.stalls == 1
    assert live.local_stall == pytest.approx(6.0)
    live.on_pong(110.001, *live.ping_sent(110.0))
    assert live.dead_at() == pytest.approx(115.001)


def test_after_a_stall_a_really_dead_peer_is_still_found_within_timeout() -> None:
    live, clock = machine()
    live.next_deadline()
    live.handle_timer(110.0)  # stall
    clock.now = 110.0
    assert clock.run_until(116.0) is Action.DEAD
    assert clock.now == pytest.approx(115.0)


def test_no_verdict_while_reading_is_paused_by_us() -> None:
    live, clock = machine()
    live.pause()
    assert clock.run_until(120.0) is Action.NONE
    live.resume(120.0)
    assert live.dead_at() == pytest.approx(125.0)


def test_ping_flood_is_refused_past_the_limit() -> None:
    live, _ = machine(max_pings_per_interval=3)
    assert [live.on_ping_received(100.0 + i * 0.01) for i in range(4)] == [True] * 3 + [False]
    assert live.on_ping_received(101.5)  # a new interval, a new allowance


def test_adaptive_timeout_follows_the_arrival_distribution() -> None:
    live, _clock = machine(policy="adaptive", timeout=10.0, interval=0.5)
    # the floor before anything is learned: one interval plus TCP's loss recovery (1.4 s)
    assert live.effective_timeout == pytest.approx(1.9)
    t = 100.0
    for _ in range(50):  # a peer that speaks every 0.5 s, like clockwork
        t += 0.5
        live.on_receive(t)
    steady = live.effective_timeout
    assert steady == pytest.approx(1.9)  # clockwork: the floor, far below the fixed 10 s
    for i in range(50):  # now irregular gaps of 0.5..3 s
        t += 0.5 + (i % 6) * 0.5
        live.on_receive(t)
    assert steady < live.effective_timeout <= 10.0


def test_adaptive_declares_a_dead_peer_quicker_than_fixed() -> None:
    live, clock = machine(policy="adaptive", timeout=10.0, interval=0.5)
    t = 100.0
    for _ in range(30):
        t += 0.5
        live.on_receive(t)
    clock.now = t
    assert clock.run_until(t + 10.0) is Action.DEAD
    assert clock.now - t < 3.0


def test_phi_grows_with_silence() -> None:
    assert phi(1.0, 1.0, 0.1) == pytest.approx(-math.log10(0.5))
    assert phi(1.5, 1.0, 0.1) > phi(1.2, 1.0, 0.1) > phi(1.0, 1.0, 0.1)
    assert phi(100.0, 1.0, 0.1) == math.inf


def test_accepting_side_stays_quiet_while_the_peers_pings_arrive() -> None:
    cfg = Config(interval=1.0, timeout=5.0)
    live = Liveness(cfg, 100.0, answer_delay=0.5)
    clock = Clock(live)
    for k in range(1, 10):  # the connecting side pings every second
        assert clock.run_until(100.0 + k) is Action.NONE
        live.on_receive(100.0 + k)
    assert clock.pings == []
    # the peer's pings stop: we ping by ourselves after interval + delay, then every interval
    assert clock.run_until(113.0) is Action.NONE
    assert clock.pings == pytest.approx([110.5, 111.5, 112.5])


def test_a_peer_with_a_shorter_interval_may_ping_at_its_own_pace() -> None:
    cfg = Config(interval=10.0, timeout=30.0, max_pings_per_interval=3)
    live = Liveness(cfg, 100.0, peer_interval=1.0)
    assert all(live.on_ping_received(100.0 + t) for t in range(60))  # one per second: fine
    assert not all(live.on_ping_received(160.0 + t * 0.01) for t in range(5))  # a burst is not
    tiny = Liveness(cfg, 100.0, peer_interval=0.001)
    assert tiny.ping_window == pytest.approx(0.1)  # announcing 1 ms buys no flood


def test_an_unsolicited_pong_is_life_but_not_an_rtt_sample() -> None:
    """A PONG no PING asked for once put thousands of seconds into the RTT (issue 8, item 11)."""
    live, _ = machine()
    assert live.on_pong(101.0, 1, 0) is None  # nothing was ever sent
    assert live.rtt is None
    assert live.dead_at() == pytest.approx(106.0)  # still evidence of life (rule 1)
    seq, stamp = live.ping_sent(102.0)
    assert live.on_pong(102.1, seq + 1, stamp) is None  # a seq we did not send
    assert live.on_pong(102.1, seq, stamp - 5_000_000_000) is None  # a forged stamp
    assert live.rtt is None
    assert live.on_pong(102.25, seq, stamp) == pytest.approx(0.25)
    assert live.on_pong(102.5, seq, stamp) is None  # answered once only
    assert live.rtt == pytest.approx(0.25)


def test_a_pong_for_a_superseded_ping_is_late_life_not_a_sample() -> None:
    live, _ = machine()
    old = live.ping_sent(101.0)
    new = live.ping_sent(102.0)
    assert live.on_pong(102.9, *old) is None
    assert live.on_pong(103.0, *new) == pytest.approx(1.0)


def test_replies_count_only_pongs_that_answer_our_pings() -> None:
    """What ``peerwatch ping`` reports as "received", as ping(8) does: replies, not life."""
    live, _ = machine()
    live.on_pong(101.0, 1, 0)  # unsolicited
    assert (live.pongs_received, live.rtt_sample) == (0, None)
    seq, stamp = live.ping_sent(102.0)
    live.on_pong(102.2, seq, stamp)
    live.on_pong(102.3, seq, stamp)  # a duplicate is not a second reply
    assert live.pongs_received == 1 and live.rtt_sample == pytest.approx(0.2)
    live.on_pong(103.4, *live.ping_sent(103.0))
    assert live.pongs_received == 2 and live.rtt_sample == pytest.approx(0.4)
    assert live.rtt != live.rtt_sample  # the smoothed RTT is another figure


def reference_deadline(live: Liveness) -> float:
    """The deadline from its parts, as rule 5 states it (paused: only the ping cadence)."""
    return live.next_ping_at() if live.paused else min(live.next_ping_at(), live.dead_at())


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["receive", "pong", "ping_sent", "pause", "resume", "timer", "start"]),
        st.floats(min_value=0.0, max_value=3.0),
    ),
    max_size=40,
)


@given(events=EVENTS, adaptive=st.booleans())
@settings(max_examples=200, deadline=None)
def test_due_is_the_deadline_after_any_sequence_of_events(
    events: list[tuple[str, float]], adaptive: bool
) -> None:
    """A timer structure reads ``due`` instead of calling ``deadline()``: it must never be stale."""
    live, _ = machine(policy="adaptive" if adaptive else "fixed", min_timeout=2.0)
    now = 100.0
    for event, step in events:
        now += step
        if event == "receive":
            live.on_receive(now)
        elif event == "pong":
            live.on_pong(now, live.ping_seq, 0)
        elif event == "ping_sent":
            live.ping_sent(now)
        elif event == "pause":
            live.pause()
        elif event == "resume":
            live.resume(now)
        elif event == "timer":
            live.handle_timer(now)
        else:
            live.start(now, answer_delay=0.5, peer_interval=0.5)
        assert live.due == reference_deadline(live), event


def test_a_stall_is_measured_from_the_time_the_timer_was_armed_for() -> None:
    """A timer structure that re-arms lazily writes ``armed``; lateness is counted from it."""
    live, _ = machine()
    live.on_receive(103.0)  # deadline now 104.0
    live.armed = 104.0  # re-armed there without a handle_timer call
    assert live.handle_timer(104.5) is Action.PING  # 0.5 s late: no stall (threshold 1 s)
    assert live.stalls == 0
    live.armed = live.due
    live.handle_timer(live.due + 3.0)
    assert live.stalls == 1 and live.local_stall == pytest.approx(3.0)
