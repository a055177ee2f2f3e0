"""assess_info(): every rule, on TCP_INFO figures built by hand (no sockets, no waiting)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.assessment.live import assess
from peerwatch.assessment.model import (
    AssessPolicy,
    Finding,
    SocketFacts,
    Status,
    Timer,
    format_duration,
)
from peerwatch.assessment.rules import RULE_FIELDS, assess_info, unacknowledged_for
from peerwatch.errors import ConfigError
from peerwatch.kernel.tcpinfo import TcpInfo, TcpState, parse_tcp_info

BASE = parse_tcp_info(bytes(240))


def info(state: TcpState = TcpState.ESTABLISHED, **fields: int) -> TcpInfo:
    """A TCP_INFO of a healthy, just-active connection, with ``fields`` changed."""
    healthy = {
        "rtt_us": 500,
        "rto_us": 204_000,
        "last_ack_recv_ms": 100,
        "last_data_recv_ms": 100,
        "last_data_sent_ms": 100,
        "snd_wnd": 65535,
        "rcv_wnd": 65535,
    }
    return dataclasses.replace(BASE, state=state, **{**healthy, **fields})


def facts(state: TcpState = TcpState.ESTABLISHED, *, keepalive: bool | None = True, **kw: object):
    tcp = kw.pop("tcp", None) or info(state)
    return SocketFacts(state=state, info=tcp, keepalive=keepalive, **kw)  # type: ignore[arg-type]


def test_recent_traffic_with_keepalive_is_alive() -> None:
    verdict = assess_info(facts())
    assert (verdict.status, verdict.cause) == (Status.ALIVE, Finding.OK)
    assert verdict.detail == "peer last heard from 100 ms ago"
    assert verdict.silent_for == 0.1
    assert "state ESTABLISHED" in verdict.evidence


def test_an_unguarded_connection_is_alive_but_says_nothing_would_notice() -> None:
    verdict = assess_info(facts(keepalive=False))
    assert (verdict.status, verdict.cause) == (Status.ALIVE, Finding.UNGUARDED)
    assert "nothing will notice" in verdict.detail


def test_an_unguarded_connection_silent_for_hours_is_suspect() -> None:
    tcp = info(last_ack_recv_ms=3 * 3600_000, last_data_recv_ms=3 * 3600_000)
    verdict = assess_info(facts(keepalive=False, tcp=tcp))
    assert (verdict.status, verdict.cause) == (Status.SUSPECT, Finding.UNGUARDED)
    assert verdict.detail == (
        "idle with no keepalive: nothing heard from the peer for 3 h, "
        "and a dead peer would never be noticed"
    )


@pytest.mark.parametrize(
    ("timer", "expected"),
    [
        (Timer.NONE, Finding.UNGUARDED),
        (Timer.KEEPALIVE, Finding.OK),
        (Timer.RETRANSMIT, Finding.OK),
    ],
)
def test_sock_diag_timer_tells_whether_keepalive_is_on(timer: Timer, expected: Finding) -> None:
    """No pending timer proves keepalive off; a retransmit timer hides it (unknown: no claim)."""
    verdict = assess_info(facts(keepalive=None, timer=timer, timer_expires_ms=0))
    assert verdict.cause is expected


def test_peer_not_acknowledging_for_long_is_dead() -> None:
    # 7 retransmissions from a 200 ms RTO: 0.2 x (2^7 - 1) = 25.4 s of backoff
    tcp = info(
        unacked=3, retransmits=7, rto_us=25_600_000, last_data_sent_ms=0, last_ack_recv_ms=30_000
    )
    verdict = assess_info(facts(tcp=tcp))
    assert (verdict.status, verdict.cause) == (Status.DEAD, Finding.NOT_ACKNOWLEDGING)
    assert verdict.detail == (
        "peer not acknowledging for 25 s, 7 retransmissions (3 segments in flight)"
    )


def test_peer_not_acknowledging_briefly_is_suspect_then_alive_below_the_threshold() -> None:
    suspect = info(unacked=1, retransmits=3, rto_us=1_600_000, last_ack_recv_ms=2000)
    assert assess_info(facts(tcp=suspect)).status is Status.SUSPECT
    one_loss = info(unacked=1, retransmits=1, rto_us=400_000, last_data_sent_ms=50)
    assert assess_info(facts(tcp=one_loss)).status is Status.ALIVE


def test_data_sent_after_a_long_idle_is_not_blamed_for_the_idle_time() -> None:
    """No ACK for an hour, but the data waiting was sent 0.3 s ago: not 'an hour'."""
    tcp = info(unacked=1, retransmits=1, rto_us=400_000, last_data_sent_ms=100,
               last_ack_recv_ms=3_600_000)  # fmt: skip
    assert unacknowledged_for(tcp) == pytest.approx(0.3)
    assert assess_info(facts(tcp=tcp)).status is Status.ALIVE


@given(
    first_rto=st.floats(0.2, 3.0),
    retransmits=st.integers(1, 15),
    since_last=st.floats(0, 100),
)
def test_unacknowledged_for_never_overstates(
    first_rto: float, retransmits: int, since_last: float
) -> None:
    """Real waits: RTO doubling from first_rto, capped at 120 s (TCP_RTO_MAX)."""
    waits = [min(first_rto * 2**i, 120.0) for i in range(retransmits)]
    rto_now = min(first_rto * 2**retransmits, 120.0)
    truth = sum(waits) + since_last
    tcp = info(unacked=1, retransmits=retransmits, rto_us=int(rto_now * 1e6),
               last_data_sent_ms=int(since_last * 1000), last_ack_recv_ms=10**9)  # fmt: skip
    assert unacknowledged_for(tcp) <= truth + 0.001


def test_unanswered_keepalive_probes_make_a_peer_suspect_then_dead() -> None:
    one = info(probes=1, last_ack_recv_ms=1500, last_data_recv_ms=9000)
    verdict = assess_info(facts(tcp=one, timer=Timer.KEEPALIVE))
    assert (verdict.status, verdict.cause) == (Status.SUSPECT, Finding.PROBES_UNANSWERED)
    assert verdict.detail.startswith("1 keepalive probe unanswered")
    many = info(probes=3, last_ack_recv_ms=12_000)
    verdict = assess_info(facts(tcp=many, timer=Timer.KEEPALIVE))
    assert (verdict.status, verdict.cause) == (Status.DEAD, Finding.PROBES_UNANSWERED)
    assert verdict.detail == ("3 keepalive probes unanswered; nothing heard from the peer for 12 s")


def test_zero_window_means_the_peer_application_is_not_reading() -> None:
    tcp = info(snd_wnd=0, notsent_bytes=6144, rwnd_limited_us=40_000_000, probes=1)
    verdict = assess_info(facts(tcp=tcp, send_queue=6144))
    assert (verdict.status, verdict.cause) == (Status.SUSPECT, Finding.PEER_NOT_READING)
    assert verdict.detail == (
        "peer's window is zero (peer application not reading); "
        "sending held back for 40 s so far, 6144 bytes waiting"
    )


def test_zero_window_with_probes_going_unanswered_is_a_dead_peer() -> None:
    tcp = info(snd_wnd=0, notsent_bytes=6144, probes=4, last_ack_recv_ms=20_000)
    verdict = assess_info(facts(tcp=tcp, timer=Timer.ZERO_WINDOW_PROBE))
    assert (verdict.status, verdict.cause) == (Status.DEAD, Finding.PROBES_UNANSWERED)
    assert "zero-window probes unanswered" in verdict.detail


def test_zero_window_with_nothing_to_send_is_not_a_problem() -> None:
    assert assess_info(facts(tcp=info(snd_wnd=0))).cause is Finding.OK


def test_a_full_receive_queue_blames_this_process() -> None:
    verdict = assess_info(facts(tcp=info(rcv_wnd=0), recv_queue=4096))
    assert (verdict.status, verdict.cause) == (Status.SUSPECT, Finding.LOCAL_NOT_READING)
    assert "4096 bytes" in verdict.detail


def test_close_wait_for_hours_is_dead() -> None:
    tcp = info(TcpState.CLOSE_WAIT, last_ack_recv_ms=3 * 3600_000, last_data_recv_ms=4 * 3600_000)
    verdict = assess_info(facts(TcpState.CLOSE_WAIT, tcp=tcp))
    assert (verdict.status, verdict.cause) == (Status.DEAD, Finding.PEER_CLOSED)
    assert verdict.detail.startswith(
        "CLOSE_WAIT for at least 3 h: the peer closed and this process never did"
    )


def test_fresh_close_wait_is_suspect() -> None:
    tcp = info(TcpState.CLOSE_WAIT, last_ack_recv_ms=2000)
    verdict = assess_info(facts(TcpState.CLOSE_WAIT, tcp=tcp))
    assert (verdict.status, verdict.cause) == (Status.SUSPECT, Finding.PEER_CLOSED)
    assert "2.0 s ago" in verdict.detail


def test_close_wait_threshold_is_a_policy() -> None:
    tcp = info(TcpState.CLOSE_WAIT, last_ack_recv_ms=2000)
    verdict = assess_info(facts(TcpState.CLOSE_WAIT, tcp=tcp), AssessPolicy(close_wait_after=1))
    assert verdict.status is Status.DEAD


def test_long_fin_wait2_says_the_peer_never_closed() -> None:
    tcp = info(TcpState.FIN_WAIT2, last_ack_recv_ms=600_000)
    verdict = assess_info(facts(TcpState.FIN_WAIT2, tcp=tcp))
    assert (verdict.status, verdict.cause) == (Status.SUSPECT, Finding.HALF_CLOSED)
    assert "10 min" in verdict.detail


@pytest.mark.parametrize("state", [TcpState.CLOSE, TcpState.TIME_WAIT])
def test_finished_connections_are_dead(state: TcpState) -> None:
    verdict = assess_info(facts(state))
    assert (verdict.status, verdict.cause) == (Status.DEAD, Finding.CLOSED)


def test_listener_with_a_full_accept_queue_is_suspect() -> None:
    full = SocketFacts(TcpState.LISTEN, info(TcpState.LISTEN), recv_queue=129, send_queue=128)
    verdict = assess_info(full)
    assert (verdict.status, verdict.cause) == (Status.SUSPECT, Finding.ACCEPT_QUEUE_FULL)
    calm = SocketFacts(TcpState.LISTEN, info(TcpState.LISTEN, unacked=2, sacked=128))
    verdict = assess_info(calm)
    assert (verdict.status, verdict.cause) == (Status.ALIVE, Finding.LISTENING)
    assert verdict.detail == "listening; 2 of 128 waiting to be accepted"


def test_unanswered_syn_is_suspect() -> None:
    verdict = assess_info(facts(TcpState.SYN_SENT, tcp=info(TcpState.SYN_SENT, retransmits=3)))
    assert (verdict.status, verdict.cause) == (Status.SUSPECT, Finding.CONNECTING)
    assert verdict.detail.startswith("SYN unanswered after 3 retransmissions")


def test_without_tcp_info_nothing_is_claimed() -> None:
    verdict = assess_info(SocketFacts(TcpState.UNKNOWN, None))
    assert (verdict.status, verdict.cause) == (Status.SUSPECT, Finding.NO_TCP_INFO)


def test_the_worst_finding_decides_and_the_others_stay_in_the_evidence() -> None:
    tcp = info(TcpState.CLOSE_WAIT, unacked=2, retransmits=8, rto_us=51_200_000,
               last_ack_recv_ms=50_000)  # fmt: skip
    verdict = assess_info(facts(TcpState.CLOSE_WAIT, tcp=tcp))
    assert verdict.cause is Finding.NOT_ACKNOWLEDGING
    assert verdict.status is Status.DEAD
    assert verdict.evidence[0].startswith("PEER_CLOSED: the peer closed its sending side")


def test_assess_takes_facts_and_records_with_facts() -> None:
    class Record:
        def facts(self) -> SocketFacts:
            return facts(TcpState.CLOSE)

    assert assess(facts()).cause is Finding.OK
    assert assess(Record()).cause is Finding.CLOSED


def test_as_dict_is_plain_data() -> None:
    data = assess_info(facts()).as_dict()
    assert data["status"] == "ALIVE"
    assert data["cause"] == "OK"
    assert isinstance(data["evidence"], list)


@pytest.mark.parametrize("bad", [-1, float("nan"), "5"])
def test_policy_refuses_nonsense(bad: object) -> None:
    with pytest.raises(ConfigError):
        AssessPolicy(dead_after=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.85, "850 ms"),
        (4.2, "4.2 s"),
        (40, "40 s"),
        (720, "12 min"),
        (10800, "3 h"),
        (216000, "2.5 d"),
    ],
)
def test_durations_read_like_a_person_would_say_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_keepalive_with_the_kernel_defaults_is_called_slow() -> None:
    verdict = assess_info(
        facts(keepalive_idle=7200, keepalive_interval=75, keepalive_count=9, user_timeout_ms=0)
    )
    assert (verdict.status, verdict.cause) == (Status.ALIVE, Finding.SLOW_KEEPALIVE)
    assert verdict.detail == (
        "keepalive on, but slow (idle 7200 s, 9 probes every 75 s): a peer dying while the "
        "connection is idle is noticed only after about 2 h"
    )


def test_guard_like_keepalive_is_not_slow_and_the_user_timeout_counts() -> None:
    quick = facts(keepalive_idle=2, keepalive_interval=1, keepalive_count=3, user_timeout_ms=4600)
    assert assess_info(quick).cause is Finding.OK
    # a long user timeout replaces the probe count: that is what bounds the idle case then
    slow = facts(keepalive_idle=2, keepalive_interval=1, keepalive_count=3,
                 user_timeout_ms=900_000)  # fmt: skip
    verdict = assess_info(slow)
    assert verdict.cause is Finding.SLOW_KEEPALIVE
    assert "about 15 min" in verdict.detail


def test_sock_diag_keepalive_timer_far_away_is_called_slow() -> None:
    far = facts(keepalive=None, timer=Timer.KEEPALIVE, timer_expires_ms=7_100_000)
    verdict = assess_info(far)
    assert verdict.cause is Finding.SLOW_KEEPALIVE
    assert "next probe is 118 min away" in verdict.detail
    near = facts(keepalive=None, timer=Timer.KEEPALIVE, timer_expires_ms=1_500)
    assert assess_info(near).cause is Finding.OK


small = st.sampled_from([0, 0, 1, 2]) | st.integers(min_value=0, max_value=400_000)


@st.composite
def any_facts(draw: st.DrawFn) -> SocketFacts:
    """Facts near every rule's edges: zero and non-zero queues, windows, probes, timers."""
    state = draw(st.sampled_from([TcpState.ESTABLISHED] * 12 + list(TcpState)))
    tcp = info(
        state,
        unacked=draw(small),
        retransmits=draw(small),
        backoff=draw(st.integers(0, 6)),
        probes=draw(small),
        snd_wnd=draw(small),
        rcv_wnd=draw(small),
        notsent_bytes=draw(small),
        last_ack_recv_ms=draw(small),
        last_data_recv_ms=draw(small),
        last_data_sent_ms=draw(small),
        rto_us=draw(st.integers(200_000, 120_000_000)),
        rwnd_limited_us=draw(small),
    )
    known = draw(st.booleans())  # a live socket knows its keepalive settings, sock_diag not
    return SocketFacts(
        state=state,
        info=draw(st.sampled_from([tcp] * 5 + [None])),
        recv_queue=draw(st.none() | small),
        send_queue=draw(st.none() | small),
        timer=draw(st.none() | st.sampled_from(list(Timer))),
        timer_expires_ms=draw(st.none() | small | st.just(7_200_000)),
        timer_retrans=draw(st.none() | small),
        keepalive=draw(st.none() | st.booleans()),
        keepalive_idle=draw(st.integers(1, 7200)) if known else None,
        keepalive_interval=draw(st.integers(1, 75)) if known else None,
        keepalive_count=draw(st.integers(1, 9)) if known else None,
        user_timeout_ms=draw(st.none() | small),
    )


@settings(max_examples=300)
@given(any_facts())
def test_the_quiet_established_shortcut_gives_what_every_rule_gives(facts: SocketFacts) -> None:
    """assess_info skips to the keepalive rule for a quiet ESTABLISHED socket (most of a
    host's): with the shortcut off, the full rule set must say exactly the same."""
    assert assess_info(facts) == without_shortcut(facts)
    assert_rule_fields_suffice(facts)


def only_rule_fields(tcp: TcpInfo) -> TcpInfo:
    """What ``parse_tcp_info(raw, RULE_FIELDS)`` gives: those fields and state, the rest None."""
    from peerwatch.frozen import build

    return build(TcpInfo, {name: getattr(tcp, name) for name in RULE_FIELDS | {"state"}})


def assert_rule_fields_suffice(facts: SocketFacts) -> None:
    """The verdict (without evidence figures) from RULE_FIELDS alone is the full one."""
    if facts.info is None:
        return
    part = dataclasses.replace(facts, info=only_rule_fields(facts.info))
    assert assess_info(part, figures=False) == assess_info(facts, figures=False)


def without_shortcut(facts: SocketFacts) -> object:
    import peerwatch.assessment.rules as rules

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rules, "_quiet_established", lambda facts: False)
        return assess_info(facts)


def test_the_shortcut_on_every_combination_of_what_it_looks_at() -> None:
    """Every combination of the figures the shortcut tests (5,184 of them), none left to luck."""
    import itertools

    grid = itertools.product(
        (0, 2),  # unacked
        (0, 3),  # retransmits
        (0, 1, 2),  # probes
        (0, 65535),  # snd_wnd
        (0, 65535),  # rcv_wnd
        (None, *Timer),
        (None, 0, 5),  # recv_queue
        (None, 5),  # send_queue
        (None, False, True),  # keepalive
    )
    checked = 0
    for unacked, retransmits, probes, snd_wnd, rcv_wnd, timer, recv_q, send_q, keepalive in grid:
        tcp = info(
            unacked=unacked,
            retransmits=retransmits,
            probes=probes,
            snd_wnd=snd_wnd,
            rcv_wnd=rcv_wnd,
            last_ack_recv_ms=90_000,  # silent past idle_after: UNGUARDED is SUSPECT
            rwnd_limited_us=2_000_000,
        )
        case = SocketFacts(
            state=TcpState.ESTABLISHED,
            info=tcp,
            recv_queue=recv_q,
            send_queue=send_q,
            timer=timer,
            timer_expires_ms=400_000,
            timer_retrans=0,
            keepalive=keepalive,
        )
        assert assess_info(case) == without_shortcut(case), case
        assert_rule_fields_suffice(case)
        checked += 1
    assert checked == 5184
