"""What each strategy should see in each scenario, from the articles and the kernel's rules.

Each expectation is a sentence for the report and a judge that checks the
observation against it. Expectations describe what the theory predicts, not
what would be good for the application: "blocking-read never notices a hung
peer" is an expectation that passes when it indeed never notices. Where
nothing reliable can be predicted (a socket timeout under random loss), the
pair is measured and shown, with no claim (``ok`` is None) and no effect on
the exit status.

Margins: kernel timers fire on their own schedule (retransmission backoff,
keepalive ticks), so the windows are generous but still fail a wrong model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from peerwatch.core.config import Config
from peerwatch.lab.observations import RESET_NAMES, Observation
from peerwatch.lab.settings import LINUX_DEFAULTS, LabSettings, human_duration
from peerwatch.lab.strategies import Strategy

Judge = Callable[[Observation], str | None]  # None: as expected; else what differs
StateJudge = Callable[[dict[str, list[str]]], str | None]
AT_ONCE = 1.0  # "at once": well under a second on a LAN, allowing for a busy CI machine


@dataclass(frozen=True)
class Expectation:
    text: str
    judge: Judge | None  # None: no claim, measured only
    untuned: str | None = None


def _fmt(seconds: float) -> str:
    return f"{seconds:.1f} s"


# ----------------------------------------------------------------- judges


def first_is(saw: str | set[str], within: float) -> Judge:
    wanted = {saw} if isinstance(saw, str) else saw

    def judge(obs: Observation) -> str | None:
        first = obs.first
        if first is None:
            return f"nothing seen; expected {'/'.join(sorted(wanted))}"
        if first.saw.split(" ")[0] not in wanted:
            return f"saw {first.saw}, expected {'/'.join(sorted(wanted))}"
        if first.t > within:
            return f"{first.saw} after {_fmt(first.t)}, expected within {_fmt(within)}"
        return None

    return judge


def final_in(
    names: frozenset[str] | set[str], lo: float, hi: float, *, after_write_ok: bool = False
) -> Judge:
    """The connection ends with one of ``names`` between ``lo`` and ``hi`` seconds."""

    def judge(obs: Observation) -> str | None:
        last = obs.last
        if last is None:
            return f"nothing seen; expected {'/'.join(sorted(names))}"
        name = last.saw.split(" ")[0]
        if name not in names:
            return f"ended with {last.saw}, expected {'/'.join(sorted(names))}"
        if not lo <= last.t <= hi:
            return f"{name} at {_fmt(last.t)}, expected in [{_fmt(lo)}, {_fmt(hi)}]"
        if after_write_ok and not obs.wrote_ok_before(last.t):
            return "no successful write before the error"
        return None

    return judge


def nothing_until(t: float, then: Judge) -> Judge:
    def judge(obs: Observation) -> str | None:
        first = obs.first
        if first is not None and first.t < t - 0.05:
            return f"{first.saw} at {_fmt(first.t)}, before anything was sent"
        return then(obs)

    return judge


def never() -> Judge:
    def judge(obs: Observation) -> str | None:
        first = obs.first
        if first is not None:
            return f"{first.saw} at {_fmt(first.t)}: the peer was not dead"
        return None

    return judge


def never_and_check() -> Judge:
    def judge(obs: Observation) -> str | None:
        alarm = never()(obs)
        if alarm is not None:
            return f"false alarm: {alarm}"
        if obs.check_ok is False:
            return "the connection no longer carries data"
        return None

    return judge


def half_open(fin_timeout: float, write_at: float) -> Judge:
    """b'' at once; CLOSE_WAIT on kang, FIN_WAIT2 then gone on kodos; RST after the write."""

    def judge(obs: Observation) -> str | None:
        problem = first_is("b''", AT_ONCE)(obs)
        if problem is not None:
            return problem
        return final_in(RESET_NAMES, fin_timeout, write_at + 2.0)(obs)

    return judge


def states_include(host: str, *states: str) -> StateJudge:
    def judge(seen: dict[str, list[str]]) -> str | None:
        names = [label.split(" ")[0] for label in seen.get(host, [])]
        missing = [s for s in states if s not in names]
        return f"{host} never in {', '.join(missing)}" if missing else None

    return judge


def state_lasted(host: str, state: str, lo: float, hi: float) -> StateJudge:
    """``host`` sat in ``state`` between ``lo`` and ``hi`` seconds (as timed by the runner)."""

    def judge(seen: dict[str, list[str]]) -> str | None:
        for label in seen.get(host, []):
            parts = label.split(" ")
            if parts[0] == state:
                if len(parts) < 2:
                    return f"{host} left {state} at once, expected {_fmt(lo)}-{_fmt(hi)}"
                lasted = float(parts[1])
                if not lo <= lasted <= hi:
                    return f"{host} in {state} for {_fmt(lasted)}, expected {_fmt(lo)}-{_fmt(hi)}"
                return None
        return f"{host} never in {state}"

    return judge


def detected_within(limit: float) -> Judge:
    def judge(obs: Observation) -> str | None:
        first = obs.first
        if first is None:
            return "not detected"
        if first.t > limit:
            return f"detected after {_fmt(first.t)}, more than {_fmt(limit)}"
        return None

    return judge


def verdict(causes: set[str], within: float) -> Judge:
    return first_is(causes, within)


def with_data_in_flight(then: Judge) -> Judge:
    """``then``, and the verdict handed back messages never acknowledged (data was in flight)."""

    def judge(obs: Observation) -> str | None:
        problem = then(obs)
        if problem is not None:
            return problem
        first = obs.first
        if first is None or not first.fields.get("undelivered"):
            return "no data in flight at the verdict: the streaming case was not exercised"
        return None

    return judge


def resumed_in_order(causes: set[str], within: float) -> Judge:
    """A resumable session: the outage seen (one of ``causes``) within ``within`` s, then
    resumed, the session never ended, and every echo came back once and in order."""

    def judge(obs: Observation) -> str | None:
        problem = first_is(causes, within)(obs)
        if problem is not None:
            return problem
        ended = [e for e in obs.signals() if e.kind != "lost"]
        if ended:
            return f"the session ended: {ended[0].saw} at {_fmt(ended[0].t)}"
        if not obs.resumed():
            return "never resumed"
        if obs.check_ok is not True:
            return "the echoes after the resume were not each message once, in order"
        return None

    return judge


def session_lost_accounted(reason: str) -> Judge:
    """The session ended with SESSION_LOST for ``reason``, and every message the client sent
    was either acknowledged or handed back, in order, none both."""

    def judge(obs: Observation) -> str | None:
        ends = [e for e in obs.signals() if e.kind == "verdict"]
        if not ends:
            return "the session did not end"
        saw = ends[0].saw.split(" ")
        if saw[:2] != ["SESSION_LOST", reason]:
            return f"ended with {ends[0].saw}, expected SESSION_LOST {reason}"
        if ends[0].fields.get("accounted") is not True:
            return "acknowledged + handed back is not exactly what was sent"
        return None

    return judge


# ----------------------------------------------------------- the table


def expectation(scenario: str, strategy: Strategy, s: LabSettings) -> Expectation:
    """The expectation for one (scenario, strategy) pair under settings ``s``."""
    name, kind = strategy.name, strategy.kind
    t, bound = s.timeout, s.bound
    timers = s.timers
    rto = s.retransmission_deadline
    untuned_rto = human_duration(LINUX_DEFAULTS.retransmission_timeout)
    untuned_keepalive = human_duration(LINUX_DEFAULTS.keepalive_bound)
    tuned_ka = s.tuned_knobs.keepalive_bound
    heartbeat = kind == "peerwatch"

    if scenario in ("graceful-close", "crash"):
        if kind == "raw":
            return Expectation("read() returns b'' at once", first_is("b''", AT_ONCE))
        if heartbeat:
            causes = {"GOODBYE"} if scenario == "graceful-close" else {"EOF", "RESET"}
            text = "/".join(sorted(causes))
            return Expectation(f"{text} at once", verdict(causes, AT_ONCE))
        return Expectation("closed at once", detected_within(AT_ONCE))

    if scenario in ("cable-out-2x", "partition-heals"):
        if kind == "resumable":
            return Expectation(
                f"outage seen (SILENT) within {_fmt(bound)}; resumed; every echo once, in order",
                resumed_in_order({"SILENT", "TIMEOUT"}, bound),
            )
        if heartbeat:
            return Expectation(
                f"SILENT within {_fmt(bound)}: the outage outlasts the bound; the application"
                " must reconnect and sort out what was lost itself",
                verdict({"SILENT", "TIMEOUT"}, bound),
            )
        return Expectation(
            "blind, and survives: nothing was in flight; the connection still carries data",
            never_and_check(),
        )

    if scenario == "power-cycle-restart" and kind == "resumable":
        return Expectation(
            "SESSION_LOST UNKNOWN: the restarted server has no memory of the session"
            " (in-process store); every message acknowledged or handed back, none both",
            session_lost_accounted("UNKNOWN"),
        )

    if scenario == "power-cycle-shared" and kind == "resumable":
        return Expectation(
            f"RESET within {_fmt(bound)}; resumed on the restarted server from the shared"
            " store (Redis); every echo once, in order",
            resumed_in_order({"RESET", "SILENT", "TIMEOUT"}, bound),
        )

    if scenario in ("power-cycle", "power-cycle-restart", "power-cycle-shared"):
        write_at = 1.0
        if heartbeat:
            return Expectation(
                f"RESET (or SILENT) within {_fmt(bound)}",
                verdict({"RESET", "SILENT", "TIMEOUT"}, bound),
            )
        if kind == "websockets":
            return Expectation("closed (no bound claimed)", detected_within(s.timeout * 3))
        if name == "keepalive-tuned":
            return Expectation(
                "ECONNRESET: a keepalive probe or the write meets RST",
                final_in(RESET_NAMES, 0.0, write_at + AT_ONCE),
            )
        return Expectation(
            "write succeeds, the next read fails with ECONNRESET",
            nothing_until(
                write_at, final_in(RESET_NAMES, write_at, write_at + AT_ONCE, after_write_ok=True)
            ),
        )

    if scenario in ("power-off", "partition-oneway"):
        write_at = s.idle_write_at if scenario == "power-off" else 0.5
        if heartbeat:
            return Expectation(
                f"SILENT (not HUNG) within {_fmt(bound)}", verdict({"SILENT", "TIMEOUT"}, bound)
            )
        if kind == "websockets":
            return Expectation("closed (no bound claimed)", detected_within(s.timeout * 3))
        if name == "read-timeout":
            return Expectation(
                f"gives up {_fmt(t)} after the write",
                final_in({"timeout"}, write_at + t - 0.1, write_at + t + AT_ONCE),
            )
        if name == "user-timeout":
            return Expectation(
                f"write ok, ETIMEDOUT {_fmt(t)} later (TCP_USER_TIMEOUT)",
                nothing_until(
                    write_at,
                    # measured: the error comes 0.4-0.7 s after the user timeout here
                    final_in(
                        {"ETIMEDOUT"}, write_at + 0.9 * t, write_at + t + max(AT_ONCE, 0.3 * t)
                    ),
                ),
            )
        if scenario == "power-off" and name.startswith("keepalive"):
            ka = timers.keepalive_bound if name == "keepalive-default" else tuned_ka
            return Expectation(
                f"idle: ETIMEDOUT by keepalive within {_fmt(ka)}",
                final_in({"ETIMEDOUT"}, 0.5, ka + AT_ONCE),
                untuned=untuned_keepalive if name == "keepalive-default" else None,
            )
        timed_out = final_in(
            {"ETIMEDOUT"},
            write_at + 0.8 * rto,
            write_at + 1.3 * rto + AT_ONCE,
            after_write_ok=True,
        )
        text = (
            f"nothing until data is sent; write ok, then ETIMEDOUT {_fmt(rto)} later "
            f"(tcp_retries2={timers.tcp_retries2})"
        )
        if name.startswith("keepalive"):
            text += "; keepalive is off while data is unacknowledged"
        return Expectation(
            text, nothing_until(write_at, timed_out), untuned=f"{untuned_rto} after the write"
        )

    if scenario == "half-open":
        write_at = timers.tcp_fin_timeout + 1.5
        if heartbeat:
            return Expectation("GOODBYE at once", verdict({"GOODBYE"}, AT_ONCE))
        if kind == "websockets":
            return Expectation("closed at once", detected_within(AT_ONCE))
        return Expectation(
            f"b'' at once; kang CLOSE_WAIT, kodos FIN_WAIT2 for tcp_fin_timeout="
            f"{timers.tcp_fin_timeout} s; then the write is answered by RST"
            " (Linux says EPIPE in CLOSE_WAIT, the article's illumos ECONNRESET)",
            half_open(timers.tcp_fin_timeout, write_at),
            untuned=f"FIN_WAIT2 for {LINUX_DEFAULTS.tcp_fin_timeout} s",
        )

    if scenario in ("cable-pull", "loss"):
        if scenario == "loss" and name in ("read-timeout", "user-timeout", "websockets"):
            return Expectation(
                "no claim: under loss a reply can take longer than the timeout", None
            )
        if name == "peerwatch-adaptive":
            # Phi accrual learns the usual quiet gaps and may declare death at its
            # floor, well before ``timeout``: a silence longer than the floor (an
            # outage plus TCP's retransmission backoff) is its trade-off.
            floor = Config(interval=s.interval, timeout=s.timeout).effective_min_timeout
            return Expectation(
                f"no claim: adaptive may act at its floor ({_fmt(floor)}), before timeout",
                None,
            )
        return Expectation("no alarm; the connection still carries data", never_and_check())

    if scenario == "hung":
        write_at = 0.5
        if heartbeat:
            # streaming: the stopped reader's kernel answers zero-window probes, not pings
            return Expectation(
                f"HUNG within {_fmt(bound)}, with data in flight",
                with_data_in_flight(verdict({"HUNG"}, bound)),
            )
        if kind == "websockets":
            return Expectation("closed: ping unanswered", detected_within(s.timeout * 3))
        if name == "read-timeout":
            return Expectation(
                f"gives up {_fmt(t)} after the write",
                final_in({"timeout"}, write_at + t - 0.1, write_at + t + AT_ONCE),
            )
        return Expectation("blind: the peer's kernel ACKs everything", never())

    if scenario == "slow-reader":
        if name in ("read-timeout", "user-timeout", "websockets"):
            return Expectation("no claim: measured (a stalled send may look like death)", None)
        return Expectation("no alarm: slow is not dead", never())

    raise KeyError(f"no expectations for scenario {scenario!r}")


def state_expectation(scenario: str, strategy: Strategy, s: LabSettings) -> StateJudge:
    """Kernel states that must have been seen (read with sock_diag), where the article says so."""
    if scenario == "half-open" and strategy.kind == "raw":
        fin_timeout = s.timers.tcp_fin_timeout
        checks = [
            states_include("kang", "CLOSE_WAIT"),
            states_include("kodos", "FIN_WAIT2", "gone"),
            # the orphan lingers tcp_fin_timeout (the watcher samples every 0.1 s)
            state_lasted("kodos", "FIN_WAIT2", fin_timeout - 0.5, fin_timeout + 1.0),
        ]

        def judge(seen: dict[str, list[str]]) -> str | None:
            for check in checks:
                problem = check(seen)
                if problem is not None:
                    return problem
            return None

        return judge
    return lambda seen: None
