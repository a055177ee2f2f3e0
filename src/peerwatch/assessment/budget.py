"""The budget audit behind ``peerwatch inspect --idle-limit S``: will anything notice in time?

A load balancer or NAT forgets a flow that stayed idle for its idle limit S
(AWS NLB 350 s, Azure 4 min, GCP 10 min, kube-proxy IPVS 900 s; FIELD.md)
without telling either end: the next segment goes nowhere. A connection is
safe behind it only if keepalive probes the flow before S (first probe after
``TCP_KEEPIDLE``, then every ``TCP_KEEPINTVL``), and a user timeout, if set,
must leave room for ordinary loss (py-amqp's 1,000 ms default killed healthy
connections: celery/py-amqp#186). ``audit_budget`` applies these rules to
one connection's ``SocketFacts``, pure like ``assess_info``:

- the socket options themselves when known (read through a borrowed
  descriptor, ``peerwatch.kernel.foreign``), exact;
- otherwise what sock_diag shows: a pending keepalive timer (on, and when its
  next probe fires) or no timer at all (off); the user timeout is then unknown.

Each finding carries the one-line fix: the ``peerwatch guard`` call whose
derived keepalive (``peerwatch.kernel.knobs.knobs_for``) starts probing before S.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from peerwatch.assessment.model import SocketFacts, Timer, format_duration
from peerwatch.kernel.guarding import RTO_MIN
from peerwatch.kernel.knobs import knobs_for
from peerwatch.kernel.tcpinfo import TcpState

__all__ = [
    "BudgetFinding",
    "BudgetProblem",
    "audit_budget",
    "fix_timeout",
    "guard_fix",
    "min_user_timeout",
]

#: A user timeout must let the head segment be retransmitted this many times (RTO, 2 RTO,
#: 4 RTO) before giving up: one lost segment or a short loss burst is not a dead peer.
RETRANSMISSIONS_ALLOWED = 3


class BudgetProblem(str, enum.Enum):
    NO_PROTECTION = "NO_PROTECTION"  # no keepalive and no user timeout
    NO_KEEPALIVE = "NO_KEEPALIVE"  # a user timeout, but nothing probes an idle flow
    KEEPALIVE_TOO_LATE = "KEEPALIVE_TOO_LATE"  # the first probe comes after the idle limit
    USER_TIMEOUT_TOO_SHORT = "USER_TIMEOUT_TOO_SHORT"  # gives up inside ordinary loss recovery

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class BudgetFinding:
    problem: BudgetProblem
    detail: str  # one sentence with the figures
    fix: str  # one line to run or write

    def as_dict(self) -> dict[str, str]:
        return {"problem": self.problem.value, "detail": self.detail, "fix": self.fix}


def fix_timeout(idle_limit: float) -> float:
    """The ``guard`` timeout to recommend: its derived keepalive idle is half the limit."""
    return max(2.0, float(int(idle_limit)))


def min_user_timeout(facts: SocketFacts) -> float:
    """Seconds a user timeout needs on this connection: RETRANSMISSIONS_ALLOWED backed-off RTOs."""
    info = facts.info
    rto = RTO_MIN
    if info is not None and info.rto_us:
        rto = max(RTO_MIN, info.rto_us / 1e6 / (1 << min(info.backoff, 30)))
    return rto * ((1 << RETRANSMISSIONS_ALLOWED) - 1)


def audit_budget(facts: SocketFacts, idle_limit: float, fix: str) -> list[BudgetFinding]:
    """What makes this connection unsafe behind a middlebox that forgets idle flows after
    ``idle_limit`` seconds; empty when nothing does. ``fix`` is the one-line remedy to quote
    (``guard_fix`` builds it). Only ESTABLISHED connections are audited."""
    if facts.state is not TcpState.ESTABLISHED:
        return []
    limit = f"{idle_limit:g} s"
    keepalive = facts.keepalive
    if keepalive is None and facts.timer is Timer.NONE:
        keepalive = False  # sock_diag: an ESTABLISHED socket with SO_KEEPALIVE has a timer
    elif keepalive is None and facts.timer is Timer.KEEPALIVE:
        keepalive = True
    out: list[BudgetFinding] = []
    user_timeout = facts.user_timeout_ms
    if keepalive is False:
        if user_timeout:
            out.append(BudgetFinding(
                BudgetProblem.NO_KEEPALIVE,
                f"no keepalive: a middlebox forgets the idle flow after {limit} and nothing "
                f"notices until the next send fails {user_timeout} ms later",
                fix,
            ))  # fmt: skip
        else:
            timeout = "user timeout unknown" if user_timeout is None else "no user timeout"
            out.append(BudgetFinding(
                BudgetProblem.NO_PROTECTION,
                f"no keepalive, {timeout}: a middlebox forgets the idle flow "
                f"after {limit} unnoticed, and a send to a dead peer waits about 15 min",
                fix,
            ))  # fmt: skip
    elif keepalive is True:
        late = _late_keepalive(facts, idle_limit)
        if late is not None:
            out.append(BudgetFinding(BudgetProblem.KEEPALIVE_TOO_LATE, late, fix))
    if user_timeout:
        needed = min_user_timeout(facts)
        if user_timeout / 1000 < needed:
            out.append(BudgetFinding(
                BudgetProblem.USER_TIMEOUT_TOO_SHORT,
                f"user timeout {user_timeout} ms is shorter than {RETRANSMISSIONS_ALLOWED} "
                f"retransmissions at this connection's RTO ({format_duration(needed)}): "
                "ordinary loss ends it with ETIMEDOUT",
                f"raise TCP_USER_TIMEOUT to at least {round(needed * 1000)} ms; {fix}",
            ))  # fmt: skip
    return out


def _late_keepalive(facts: SocketFacts, idle_limit: float) -> str | None:
    limit = f"{idle_limit:g} s"
    idle, interval = facts.keepalive_idle, facts.keepalive_interval
    if idle is not None and interval is not None:
        if idle >= idle_limit:
            return (
                f"keepalive's first probe comes after {format_duration(idle)} idle, "
                f"the middlebox forgets the flow after {limit}"
            )
        if interval >= idle_limit:
            return (
                f"keepalive probes every {format_duration(interval)}, "
                f"the middlebox forgets the flow after {limit}"
            )
        return None
    if facts.timer is Timer.KEEPALIVE and facts.timer_expires_ms is not None:
        next_probe = facts.timer_expires_ms / 1000
        if next_probe >= idle_limit:
            return (
                f"keepalive's next probe is {format_duration(next_probe)} away, "
                f"the middlebox forgets the flow after {limit} idle"
            )
    return None


def guard_fix(idle_limit: float, pid: int | None, port: int) -> str:
    """The one-line remedy: guard the process's socket from outside, or in the program."""
    timeout = fix_timeout(idle_limit)
    knobs = knobs_for(timeout)
    if pid is None:
        return f"peerwatch.guard(sock, timeout={timeout:g}) in the program that owns it"
    return (
        f"peerwatch guard --pid {pid} --port {port} --timeout {timeout:g}"
        f"  (keepalive after {knobs.keepalive_idle} s, every {knobs.keepalive_interval} s)"
    )
