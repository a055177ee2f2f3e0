"""Kernel-level detection knobs: TCP_NODELAY, SO_KEEPALIVE timers, TCP_USER_TIMEOUT.

Why both keepalive and TCP_USER_TIMEOUT (Cloudflare, "When TCP sockets refuse to
die"): keepalive probes only run while nothing is in flight, so they catch a dead
peer on an idle connection; TCP_USER_TIMEOUT bounds how long sent data may stay
unacknowledged, so it catches a dead peer while data is in flight (and, when
set, it also replaces the keepalive probe count as the give-up rule). Together
they bound detection whether the connection is idle or busy. We keep
``idle + interval * count`` at or just below the user timeout so neither path is
slower than the bound.

Every option is applied independently and reported: off Linux some do not
exist (macOS spells TCP_KEEPIDLE as TCP_KEEPALIVE and has no TCP_USER_TIMEOUT),
and a caller must be able to see what protection it really got.
"""

from __future__ import annotations

import math
import socket
import sys
from dataclasses import dataclass, field
from typing import Literal

from peerwatch.errors import ConfigError

#: TCP_USER_TIMEOUT (Linux >= 2.6.37); the constant is missing from older Pythons' socket module.
TCP_USER_TIMEOUT = getattr(
    socket, "TCP_USER_TIMEOUT", 18 if sys.platform.startswith("linux") else None
)
#: Idle time before the first keepalive probe: TCP_KEEPIDLE on Linux, TCP_KEEPALIVE on macOS.
TCP_KEEPIDLE = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))
TCP_KEEPINTVL = getattr(socket, "TCP_KEEPINTVL", None)
TCP_KEEPCNT = getattr(socket, "TCP_KEEPCNT", None)

Outcome = Literal["set", "unavailable", "failed"]


@dataclass(frozen=True)
class KernelKnobs:
    """Socket options that make the kernel itself notice a dead peer within ``bound`` seconds."""

    keepalive_idle: int  # seconds of idleness before the first probe
    keepalive_interval: int  # seconds between unanswered probes
    keepalive_count: int  # unanswered probes before the kernel gives up
    user_timeout_ms: int  # longest time sent data may stay unacknowledged
    nodelay: bool = True

    @property
    def keepalive_bound(self) -> int:
        """Seconds an idle connection to a dead peer survives: idle + interval x count."""
        return self.keepalive_idle + self.keepalive_interval * self.keepalive_count


def knobs_for(
    bound: float, *, probes: int = 3, nodelay: bool = True, idle_limit: float | None = None
) -> KernelKnobs:
    """Derive keepalive and user-timeout settings that detect a dead peer within ``bound`` s.

    Keepalive timers have a granularity of one second, so bounds under about
    ``1 + probes`` seconds are met by TCP_USER_TIMEOUT only when data is in flight;
    ``keepalive_bound`` tells what an idle connection really gets.

    ``idle_limit`` is the idle timeout of a middlebox on the path (a cloud load
    balancer or NAT forgets a flow idle that long: AWS NLB 350 s, Azure 4 min):
    the first keepalive probe is then sent before it (see ``first_probe_before``),
    so the probe itself keeps the flow alive.
    """
    if not math.isfinite(bound) or bound <= 0:
        raise ConfigError(f"detection bound must be a positive number of seconds, got {bound!r}")
    if probes < 1:
        raise ConfigError(f"keepalive probes must be at least 1, got {probes}")
    interval = max(1, math.floor(bound / 2 / probes))
    idle = max(1, math.floor(bound - interval * probes))
    if idle_limit is not None:
        idle = min(idle, first_probe_before(idle_limit))
    return KernelKnobs(
        keepalive_idle=idle,
        keepalive_interval=interval,
        keepalive_count=probes,
        user_timeout_ms=max(1, round(bound * 1000)),
        nodelay=nodelay,
    )


def first_probe_before(idle_limit: float) -> int:
    """Keepalive idle time (whole seconds) that sends a probe before ``idle_limit`` elapses.

    A tenth of the limit (at least one second) is kept as margin: the keepalive
    timer is coarse and the middlebox's clock is not ours.
    """
    if not math.isfinite(idle_limit) or idle_limit < 2:
        raise ConfigError(f"idle limit must be at least 2 seconds, got {idle_limit!r}")
    return max(1, math.floor(idle_limit - max(1.0, idle_limit / 10)))


@dataclass(frozen=True)
class Applied:
    """What each option did on this socket: ``set``, ``unavailable`` (platform) or ``failed``."""

    options: dict[str, Outcome] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(v == "set" for v in self.options.values())

    def missing(self) -> list[str]:
        return [k for k, v in self.options.items() if v != "set"]

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.options.items()]
        return ", ".join(parts)


def apply_knobs(sock: socket.socket, knobs: KernelKnobs) -> Applied:
    """Apply ``knobs`` to ``sock`` (connected or listening); never raises for a missing option.

    On a listening socket Linux copies these options to every accepted socket.
    """
    options: dict[str, Outcome] = {}
    errors: dict[str, str] = {}

    def setopt(name: str, level: int, opt: int | None, value: int) -> None:
        if opt is None:
            options[name] = "unavailable"
            return
        try:
            sock.setsockopt(level, opt, value)
        except OSError as exc:
            options[name] = "failed"
            errors[name] = f"{type(exc).__name__}: {exc}"
        else:
            options[name] = "set"

    if knobs.nodelay:
        setopt("TCP_NODELAY", socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    setopt("SO_KEEPALIVE", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    setopt("TCP_KEEPIDLE", socket.IPPROTO_TCP, TCP_KEEPIDLE, knobs.keepalive_idle)
    setopt("TCP_KEEPINTVL", socket.IPPROTO_TCP, TCP_KEEPINTVL, knobs.keepalive_interval)
    setopt("TCP_KEEPCNT", socket.IPPROTO_TCP, TCP_KEEPCNT, knobs.keepalive_count)
    setopt("TCP_USER_TIMEOUT", socket.IPPROTO_TCP, TCP_USER_TIMEOUT, knobs.user_timeout_ms)
    return Applied(options, errors)
