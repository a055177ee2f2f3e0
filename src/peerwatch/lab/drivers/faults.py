"""The faults of the driver scenarios, their timelines, and what theory predicts for each.

Times are seconds from the fault (t = 0). Every client gets the same commands at
the same instant: ``slow`` (a request the server never finishes), ``quick`` (a
round trip). What an application waits is counted from the fault when the
request was already in flight, otherwise from the moment it made its request;
an error that came before the request (a driver's heartbeat, or a socket the
kernel had already closed) counts as 0 s of waiting.

Claims are made only where the issue and the kernel's rules predict an outcome
independent of the driver: ``guard``/``peerwatch run`` end a request in flight
to a powered-off host within the budget (+10 %), keep a flow alive through a
middlebox whose idle timeout is longer than their first keepalive probe, while
the unprotected driver waits past the bound in both cases; a request sent to
a powered-off host fails within the budget (TCP_USER_TIMEOUT); a hung server
(its kernel still ACKs) goes unnoticed by every kernel-level protection (only
an application heartbeat, such as pika's or nats.py's, notices); and a pool with
``peerwatch.check`` replaces a connection the server closed while it was idle,
so the application gets its reply and no error. Everything else is measured and
shown without a claim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Action = Literal["slow", "quick", "power-off", "sigstop"]
Step = tuple[float, Action]

#: Protections measured for every driver (see peerwatch.lab.agents.drivers).
PROTECTIONS = ("defaults", "driver", "guard", "run", "pool-check")
PROTECTED = ("guard", "run", "pool-check")


@dataclass(frozen=True)
class DriverSettings:
    mode: Literal["quick", "full"]
    timeout: float  # the budget given to guard / peerwatch run / the drivers' own options
    bound: float  # how long a waiting application is watched before it is called "never"
    idle_close: int  # servers' idle timeout in the server-idle-close fault
    middlebox_timeout: int  # conntrack's established-flow timeout in the middlebox fault
    warmup: float = 1.0

    @property
    def claimed(self) -> float:
        """The bound claimed for a protected connection: the budget + 10 %."""
        return round(self.timeout * 1.1, 2)


def settings_for(mode: str) -> DriverSettings:
    if mode == "quick":
        return DriverSettings("quick", timeout=5.0, bound=12.0, idle_close=2, middlebox_timeout=6)
    return DriverSettings("full", timeout=5.0, bound=60.0, idle_close=2, middlebox_timeout=6)


@dataclass(frozen=True)
class Fault:
    name: str
    summary: str
    timeline: Callable[[DriverSettings], list[Step]]
    from_fault: bool  # the wait counts from the fault (request in flight), else from the request
    middlebox: bool = False
    idle_close: bool = False
    only_idle_closers: bool = False  # meaningful only for servers with an idle timeout


FAULTS = (
    Fault(
        "power-off-inflight",
        "a request is in flight (the server is working on it) when the host loses power",
        lambda s: [(-1.0, "slow"), (0.0, "power-off")],
        from_fault=True,
    ),
    Fault(
        "power-off-idle",
        "the connection is idle when the host loses power; a request comes later",
        lambda s: [(0.0, "power-off"), (s.timeout + 3.0, "quick")],
        from_fault=False,
    ),
    Fault(
        "power-off-after",
        "the host loses power; the next request comes 1 s later",
        lambda s: [(0.0, "power-off"), (1.0, "quick")],
        from_fault=False,
    ),
    Fault(
        "hung",
        "SIGSTOP to every server process: the kernel still ACKs, nothing answers",
        lambda s: [(0.0, "sigstop"), (1.0, "quick")],
        from_fault=False,
    ),
    Fault(
        "server-idle-close",
        "the server closes a connection idle past its idle timeout; a request comes later",
        lambda s: [(float(s.idle_close + 2), "quick")],
        from_fault=False,
        idle_close=True,
        only_idle_closers=True,
    ),
    Fault(
        "middlebox",
        "a NAT between client and server forgets idle flows and drops their packets",
        lambda s: [(float(s.middlebox_timeout + 4), "quick")],
        from_fault=False,
        middlebox=True,
    ),
)
BY_NAME = {fault.name: fault for fault in FAULTS}


@dataclass(frozen=True)
class Expectation:
    text: str
    outcome: Literal["error", "reply", "never"] | None  # None: measured, no claim
    within: float | None = None  # for "error": at most this many seconds of waiting


def keepalive_bound(options: dict[str, int]) -> float | None:
    """Seconds an idle connection to a dead peer survives with these socket options.

    None when keepalive is off. With a user timeout, Linux gives up at the first
    probe past it; otherwise after idle + interval x count (tcp_keepalive_timer).
    """
    if not options.get("SO_KEEPALIVE"):
        return None
    idle, interval = options.get("TCP_KEEPIDLE", 7200), options.get("TCP_KEEPINTVL", 75)
    count, user_timeout = options.get("TCP_KEEPCNT", 9), options.get("TCP_USER_TIMEOUT", 0)
    if user_timeout:
        return float(max(idle + interval, user_timeout / 1000))
    return float(idle + interval * count)


def options_text(options: dict[str, int]) -> str:
    if not options:
        return "?"
    if not options.get("SO_KEEPALIVE"):
        keepalive = "keepalive off"
    else:
        keepalive = (
            f"keepalive {options.get('TCP_KEEPIDLE')}+{options.get('TCP_KEEPINTVL')}"
            f"x{options.get('TCP_KEEPCNT')}"
        )
    return f"{keepalive}, user timeout {options.get('TCP_USER_TIMEOUT', 0)} ms"


def expectation(
    fault: Fault,
    protection: str,
    s: DriverSettings,
    options: dict[str, int] | None = None,
    *,
    attempts: int = 1,
    idle_expiry: float | None = None,
) -> Expectation:
    """What theory predicts; ``options`` are the driver's socket options as the kernel has them
    (a driver's own default keepalive, such as redis-py 8.1's 30+5x3, changes the prediction);
    ``attempts``: connections the driver tries for one request (aiohttp retries once), each
    protected, so the application waits up to one budget per attempt; ``idle_expiry``: the
    pool drops a connection idle that long rather than reuse it (httpx 5 s, aiohttp 15 s)."""
    own = keepalive_bound(options or {})
    within = round(s.claimed * attempts, 2)
    clear = Expectation(
        f"clear error within {within:g} s"
        + (f" ({attempts} attempts, each within the budget)" if attempts > 1 else ""),
        "error",
        within,
    )
    if fault.name == "power-off-inflight":
        if protection in PROTECTED:
            return clear
        if protection == "defaults" and own is not None and own * 1.1 + 1 < s.bound:
            # the last segment from the server came about 1 s before the fault
            bound = round(own * 1.1, 1)
            return Expectation(
                f"the driver's own keepalive: error within {bound:g} s", "error", bound
            )
        if protection == "defaults":
            return Expectation(f"still waiting at {s.bound:g} s", "never")
    if fault.name == "power-off-after" and protection in PROTECTED:
        # the request's bytes stay unacknowledged: TCP_USER_TIMEOUT ends it
        return clear
    if fault.name == "hung" and protection in (*PROTECTED, "defaults"):
        return Expectation("the kernel still ACKs: nothing notices", "never")
    if fault.name == "server-idle-close" and protection == "pool-check":
        return Expectation("replaced at checkout: reply, no error", "reply")
    if fault.name == "middlebox":
        first_probe = (options or {}).get("TCP_KEEPIDLE", 7200)
        user_timeout = (options or {}).get("TCP_USER_TIMEOUT", 0) / 1000
        if protection == "defaults" and idle_expiry is not None:
            if idle_expiry < s.middlebox_timeout:
                text = f"the pool drops connections idle {idle_expiry:g} s, before the NAT: reply"
                return Expectation(text, "reply")
            return Expectation("–", None)  # depends on how long it sat idle: measured
        if protection == "defaults" and own is not None and first_probe < s.middlebox_timeout:
            return Expectation("the driver's own keepalive keeps the flow: reply", "reply")
        if protection == "defaults" and user_timeout:
            within = round(user_timeout + 1, 1)  # the next retransmission past it
            return Expectation(
                f"the driver's own user timeout: error within {within:g} s", "error", within
            )
        if protection in PROTECTED:
            return Expectation("keepalive keeps the flow: reply", "reply")
        if protection == "defaults":
            return Expectation(f"request vanishes: still waiting at {s.bound:g} s", "never")
    return Expectation("–", None)
