"""The lab's arithmetic and judgement, without namespaces: kernel timer models, expectations."""

from __future__ import annotations

import pytest

from peerwatch.lab.expectations import expectation
from peerwatch.lab.observations import Observation
from peerwatch.lab.scenarios import CLIENT_COMMANDS, FAULT_ACTIONS, SCENARIOS
from peerwatch.lab.settings import (
    FULL,
    LINUX_DEFAULTS,
    QUICK,
    human_duration,
    retransmission_deadline,
    retries_timeout,
)
from peerwatch.lab.strategies import BY_NAME, RETURN_STRATEGIES, STRATEGIES


def test_untuned_retransmission_timeout_is_the_kernels_924_6_seconds() -> None:
    # net/ipv4/tcp_timer.c tcp_model_timeout() with TCP_RTO_MIN=200 ms, TCP_RTO_MAX=120 s
    assert retries_timeout(15) == pytest.approx(924.6)
    assert human_duration(LINUX_DEFAULTS.retransmission_timeout) == "15 min 25 s"


def test_short_retries_double_from_rto_min() -> None:
    assert retries_timeout(4) == pytest.approx(0.2 + 0.4 + 0.8 + 1.6 + 3.2)
    assert retransmission_deadline(4) == pytest.approx(6.2)


def test_untuned_keepalive_takes_two_hours_eleven_minutes() -> None:
    assert LINUX_DEFAULTS.keepalive_bound == 7200 + 75 * 9
    assert human_duration(LINUX_DEFAULTS.keepalive_bound) == "2 h 11 min 15 s"


def test_sysctl_names_are_the_proc_sys_ones() -> None:
    assert QUICK.timers.sysctls()["net.ipv4.tcp_retries2"] == str(QUICK.timers.tcp_retries2)
    assert set(QUICK.timers.sysctls()) == set(LINUX_DEFAULTS.sysctls())


@pytest.mark.parametrize("settings", [QUICK, FULL], ids=["quick", "full"])
def test_cable_outage_is_shorter_than_every_bound(settings: object) -> None:
    from peerwatch.lab.settings import LabSettings

    assert isinstance(settings, LabSettings)
    assert settings.cable_outage < settings.timeout / 2
    assert settings.cable_outage * 1000 < settings.tuned_knobs.user_timeout_ms / 2
    # power-off writes only after both keepalive flavours had time to give up
    assert settings.idle_write_at > settings.timers.keepalive_bound
    assert settings.idle_write_at > settings.tuned_knobs.keepalive_bound


def test_every_scenario_step_is_known_and_every_pair_has_an_expectation() -> None:
    for scenario in SCENARIOS:
        for step in scenario.timeline(QUICK):
            assert step.action in FAULT_ACTIONS | CLIENT_COMMANDS, step
            assert 0 <= step.at <= scenario.duration(QUICK)
        for strategy in STRATEGIES:
            assert expectation(scenario.name, strategy, QUICK).text


def _observation(strategy: str, *events: tuple[float, dict[str, object]]) -> Observation:
    obs = Observation(strategy)
    for t, record in events:
        obs.add(t, {"t": 100.0 + t, **record})
    return obs


def test_power_off_judge_accepts_the_article_and_rejects_an_early_reset() -> None:
    exp = expectation("power-off", BY_NAME["blocking-read"], QUICK)
    assert exp.judge is not None
    write_at, rto = QUICK.idle_write_at, QUICK.retransmission_deadline
    article = _observation(
        "blocking-read",
        (write_at, {"ev": "write", "ok": True}),
        (write_at + rto + 0.1, {"ev": "read", "saw": "ETIMEDOUT"}),
    )
    assert exp.judge(article) is None
    wrong = _observation(
        "blocking-read",
        (write_at, {"ev": "write", "ok": True}),
        (write_at + 0.01, {"ev": "read", "saw": "ECONNRESET"}),
    )
    assert exp.judge(wrong) is not None
    blind = _observation("blocking-read", (write_at, {"ev": "write", "ok": True}))
    assert exp.judge(blind) is not None


def test_peerwatch_must_say_hung_not_silent_for_a_stopped_peer() -> None:
    exp = expectation("hung", BY_NAME["peerwatch"], QUICK)
    assert exp.judge is not None

    def seen(at: float, cause: str, undelivered: int = 40) -> Observation:
        return _observation(
            "peerwatch",
            (at, {"ev": "verdict", "saw": cause, "at": 100 + at, "undelivered": undelivered}),
        )

    assert exp.judge(seen(2.0, "HUNG")) is None
    assert exp.judge(seen(2.0, "SILENT")) is not None
    assert exp.judge(seen(9.0, "HUNG")) is not None
    # the peerwatch clients stream into the stopped peer: a verdict without data in
    # flight means the window-probe case was not exercised
    assert "in flight" in (exp.judge(seen(2.0, "HUNG", undelivered=0)) or "")


def test_a_detection_in_an_alive_scenario_is_a_false_alarm() -> None:
    exp = expectation("loss", BY_NAME["peerwatch"], QUICK)
    assert exp.judge is not None
    quiet = _observation("peerwatch", (10.5, {"ev": "check", "ok": True}))
    alarm = _observation("peerwatch", (3.0, {"ev": "verdict", "saw": "SILENT", "at": 103.0}))
    assert exp.judge(quiet) is None
    assert "false alarm" in (exp.judge(alarm) or "")


def test_verdict_time_is_peerwatchs_own_decision_time() -> None:
    # the report is written later than the decision; the decision time counts
    obs = _observation("peerwatch", (2.5, {"ev": "verdict", "saw": "SILENT", "at": 102.1}))
    assert obs.seconds == pytest.approx(2.1)


def test_saw_text_collapses_repeated_writes() -> None:
    obs = _observation(
        "blocking-read",
        *[(float(t), {"ev": "write", "ok": True}) for t in range(1, 5)],
        (5.0, {"ev": "read", "saw": "ECONNRESET"}),
    )
    assert obs.saw_text() == "write ok 1.0 s ×4 · ECONNRESET"


def test_the_resumable_session_runs_only_where_the_peer_comes_back() -> None:
    resumable = BY_NAME["peerwatch-resume"]
    returning = [s.name for s in SCENARIOS if s.runs(resumable)]
    assert returning == [
        "cable-out-2x",
        "partition-heals",
        "power-cycle-restart",
        "power-cycle-shared",
    ]
    for scenario in SCENARIOS:
        if scenario.peer_returns:
            # the outage outlasts every bound: a heartbeat must call it
            assert scenario.peer_dead
            assert [s.name for s in STRATEGIES if scenario.runs(s)] == list(RETURN_STRATEGIES)
        else:
            assert [s.name for s in STRATEGIES if scenario.runs(s)] == [
                s.name for s in STRATEGIES if s is not resumable
            ]


def _resumable(*events: tuple[float, dict[str, object]]) -> Observation:
    return _observation("peerwatch-resume", *events)


def test_resumed_means_the_outage_was_seen_resumed_and_every_echo_came_once() -> None:
    exp = expectation("cable-out-2x", BY_NAME["peerwatch-resume"], QUICK)
    assert exp.judge is not None
    lost = (2.0, {"ev": "lost", "saw": "SILENT", "at": 102.0})
    resumed = (4.1, {"ev": "resumed", "at": 104.1, "outage": 2.1, "replayed": 3})
    checked = (6.5, {"ev": "check", "ok": True, "echoed": 30})
    good = _resumable(lost, resumed, checked)
    assert exp.judge(good) is None
    assert good.over_at() is None  # a lost connection does not end the session
    assert good.saw_text() == (
        "SILENT · resumed 4.1 s (2.1 s out, 3 replayed) · 30 echoes once, in order"
    )
    assert exp.judge(_resumable(lost, checked)) == "never resumed"
    wrong_echoes = (6.5, {"ev": "check", "ok": False, "echoed": 29, "why": "gap"})
    assert "once, in order" in (exp.judge(_resumable(lost, resumed, wrong_echoes)) or "")
    ended = (3.0, {"ev": "verdict", "saw": "SESSION_LOST WINDOW", "at": 103.0})
    assert "ended" in (exp.judge(_resumable(lost, ended, resumed, checked)) or "")
    late = (3.0, {"ev": "lost", "saw": "SILENT", "at": 103.0})
    assert exp.judge(_resumable(late, resumed, checked)) is not None  # past the bound


def test_a_lost_session_must_account_for_every_message() -> None:
    exp = expectation("power-cycle-restart", BY_NAME["peerwatch-resume"], QUICK)
    assert exp.judge is not None

    def ended(saw: str, accounted: bool) -> Observation:
        record = {"ev": "verdict", "saw": saw, "at": 101.5, "acked": 6, "undelivered": 3}
        return _resumable((1.5, {**record, "accounted": accounted}))

    assert exp.judge(ended("SESSION_LOST UNKNOWN", True)) is None
    assert exp.judge(ended("SESSION_LOST UNKNOWN", False)) is not None
    assert exp.judge(ended("SESSION_LOST WINDOW", True)) is not None
    assert exp.judge(_resumable()) == "the session did not end"
