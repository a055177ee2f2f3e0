"""The ways of detecting a dead peer that the lab measures, side by side.

The five raw strategies run the same poll()-based client, the traced netcat
(``dnc``) of the TCP puzzlers article: it reads when the socket is readable,
writes when told to, and keeps a half-closed socket open. They differ only in
the protection they add. The other three speak a protocol with heartbeats.
The resumable session (issue 12) runs only where the peer comes back, beside
``RETURN_STRATEGIES``: what it adds is what happens after the outage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from peerwatch.lab.settings import LabSettings

Kind = Literal["raw", "websockets", "peerwatch", "resumable"]
Keepalive = Literal["off", "default", "tuned"]

#: Server ports: strategy i listens on BASE_PORT + i, so a socket's port names its strategy.
BASE_PORT = 7000


@dataclass(frozen=True)
class Strategy:
    name: str
    kind: Kind
    summary: str
    keepalive: Keepalive = "off"
    user_timeout: bool = False
    read_timeout: bool = False
    policy: Literal["fixed", "adaptive"] = "fixed"

    def client_spec(self, settings: LabSettings, host: str, port: int) -> dict[str, object]:
        """What the client agent needs to know, as JSON-able values."""
        knobs = settings.tuned_knobs
        return {
            "strategy": self.name,
            "kind": self.kind,
            "host": host,
            "port": port,
            "interval": settings.interval,
            "timeout": settings.timeout,
            "keepalive": self.keepalive,
            "keepalive_idle": knobs.keepalive_idle,
            "keepalive_interval": knobs.keepalive_interval,
            "keepalive_count": knobs.keepalive_count,
            "user_timeout_ms": knobs.user_timeout_ms if self.user_timeout else 0,
            "read_timeout": settings.timeout if self.read_timeout else 0,
            "policy": self.policy,
            "close_timeout": settings.websockets_close_timeout,
            "resume_timeout": settings.resume_timeout,
        }


STRATEGIES: tuple[Strategy, ...] = (
    Strategy("blocking-read", "raw", "plain recv(), no protection"),
    Strategy(
        "read-timeout",
        "raw",
        "socket timeout: give up when a reply, or progress of a send, takes longer than timeout",
        read_timeout=True,
    ),
    Strategy("keepalive-default", "raw", "SO_KEEPALIVE with the host's sysctl timers", "default"),
    Strategy(
        "keepalive-tuned",
        "raw",
        "SO_KEEPALIVE with TCP_KEEPIDLE/INTVL/CNT from peerwatch.knobs_for(timeout)",
        "tuned",
    ),
    Strategy("user-timeout", "raw", "TCP_USER_TIMEOUT = timeout", user_timeout=True),
    Strategy("peerwatch", "peerwatch", "peerwatch heartbeat, fixed timeout"),
    Strategy(
        "peerwatch-adaptive",
        "peerwatch",
        "peerwatch heartbeat, adaptive timeout (phi accrual, capped at timeout)",
        policy="adaptive",
    ),
    Strategy("websockets", "websockets", "websockets keepalive: ping_interval, ping_timeout"),
    Strategy(
        "peerwatch-resume",
        "resumable",
        "peerwatch resumable session (resume=True): reconnects, replays, exactly once",
    ),
)

BY_NAME = {strategy.name: strategy for strategy in STRATEGIES}
RAW = tuple(s.name for s in STRATEGIES if s.kind == "raw")
#: Who runs in the scenarios where the peer comes back: the resumable session beside a plain
#: peerwatch connection and the two raw clients whose fate there is clear-cut.
RETURN_STRATEGIES = ("blocking-read", "user-timeout", "peerwatch", "peerwatch-resume")


def port_of(strategy: Strategy) -> int:
    return BASE_PORT + STRATEGIES.index(strategy)
