"""What ``assess()`` answers: the status, the cause, the figures it looked at, the policy.

These are plain data so that a verdict can be printed, compared in tests and
sent as JSON (``peerwatch inspect --json``) without carrying a socket along.
``SocketFacts`` is the single input of the rules in ``peerwatch.assessment.rules``,
built either from a live socket (``peerwatch.assessment.live.socket_facts``) or from a
netlink sock_diag record (``peerwatch.diag.sockdiag``); unknown figures are
None there, never guessed.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from peerwatch.errors import ConfigError
from peerwatch.kernel.tcpinfo import TcpInfo, TcpState

__all__ = [
    "AssessPolicy",
    "Assessment",
    "Finding",
    "SocketFacts",
    "Status",
    "Timer",
    "format_duration",
]


class Status(str, enum.Enum):
    """How the connection looks, from best to worst."""

    ALIVE = "ALIVE"
    SUSPECT = "SUSPECT"
    DEAD = "DEAD"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __str__(self) -> str:
        return self.value


#: a dict, not a search of the values: every row of inspect's worst-first sort asks
_RANK = {Status.ALIVE: 0, Status.SUSPECT: 1, Status.DEAD: 2}


class Finding(str, enum.Enum):
    """Machine-readable cause of an assessment."""

    OK = "OK"  # the peer was heard from recently and nothing is outstanding
    UNGUARDED = "UNGUARDED"  # no keepalive: a peer dying while idle would never be noticed
    SLOW_KEEPALIVE = "SLOW_KEEPALIVE"  # keepalive on, but it would take very long to notice
    NOT_ACKNOWLEDGING = "NOT_ACKNOWLEDGING"  # data in flight, retransmissions unanswered
    PROBES_UNANSWERED = "PROBES_UNANSWERED"  # keepalive or zero-window probes unanswered
    PEER_NOT_READING = "PEER_NOT_READING"  # the peer advertises a zero window
    LOCAL_NOT_READING = "LOCAL_NOT_READING"  # this side's receive queue is full
    PEER_CLOSED = "PEER_CLOSED"  # CLOSE_WAIT: the peer closed, this process did not
    HALF_CLOSED = "HALF_CLOSED"  # FIN_WAIT2: this side closed, the peer did not
    CLOSING = "CLOSING"  # FIN_WAIT1, CLOSING, LAST_ACK: closing handshake in progress
    CLOSED = "CLOSED"  # CLOSE (reset or given up) or TIME_WAIT: the connection is over
    CONNECTING = "CONNECTING"  # SYN_SENT or SYN_RECV
    LISTENING = "LISTENING"
    ACCEPT_QUEUE_FULL = "ACCEPT_QUEUE_FULL"  # the listening process does not accept
    NO_TCP_INFO = "NO_TCP_INFO"  # the platform tells nothing about the connection

    def __str__(self) -> str:
        return self.value


class Timer(enum.IntEnum):
    """The timer sock_diag reports as pending (``idiag_timer``, net/ipv4/inet_diag.c)."""

    NONE = 0
    RETRANSMIT = 1  # also tail loss probe and reordering timeout
    KEEPALIVE = 2  # sk_timer: keepalive (or the FIN_WAIT2 timer of an orphan)
    TIME_WAIT = 3
    ZERO_WINDOW_PROBE = 4

    @property
    def label(self) -> str:
        return ("off", "retransmit", "keepalive", "time-wait", "zero-window-probe")[self.value]


@dataclass(frozen=True)
class SocketFacts:
    """Everything assess_info() looks at. Unknown figures are None, never guessed."""

    state: TcpState
    info: TcpInfo | None
    recv_queue: int | None = None  # bytes received and not read by the owning process
    send_queue: int | None = None  # bytes written and not yet acknowledged by the peer
    timer: Timer | None = None  # pending timer (sock_diag); None when not known
    timer_expires_ms: int | None = None
    timer_retrans: int | None = None  # retransmissions or probes counted by that timer
    keepalive: bool | None = None  # SO_KEEPALIVE, when known
    keepalive_idle: int | None = None  # s
    keepalive_interval: int | None = None  # s
    keepalive_count: int | None = None
    user_timeout_ms: int | None = None  # 0 = off (kernel default)


@dataclass(frozen=True)
class AssessPolicy:
    """Thresholds in seconds. Defaults suit a LAN/datacenter; raise them for slow links."""

    suspect_after: float = 1.0  # data unacknowledged this long, with retransmissions: SUSPECT
    dead_after: float = 10.0  # data or probes unacknowledged this long: DEAD
    close_wait_after: float = 60.0  # CLOSE_WAIT this old: DEAD (a peer's tcp_fin_timeout)
    idle_after: float = 60.0  # unguarded and silent this long: SUSPECT
    #: keepalive settings that need longer than this to notice an idle dead peer are
    #: reported (the kernel defaults, 7200 + 9 x 75 s, need 2 h 11 min)
    keepalive_bound_after: float = 300.0

    def __post_init__(self) -> None:
        for name in (
            "suspect_after",
            "dead_after",
            "close_wait_after",
            "idle_after",
            "keepalive_bound_after",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
                raise ConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")


@dataclass(frozen=True)
class Assessment:
    """The verdict on one connection: status, the cause that decided it, and the figures."""

    status: Status
    cause: Finding
    detail: str  # one sentence, with the decisive figures
    evidence: tuple[str, ...]  # every figure and secondary finding, most telling first
    silent_for: float | None = None  # s since the peer's last segment, when known

    def describe(self) -> str:
        return f"{self.status.value} {self.cause.value}: {self.detail}"

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "cause": self.cause.value,
            "detail": self.detail,
            "evidence": list(self.evidence),
            "silent_for": None if self.silent_for is None else round(self.silent_for, 3),
        }


def format_duration(seconds: float) -> str:
    """Short human duration: '850 ms', '4.2 s', '40 s', '12 min', '3 h', '2.5 d'."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.1f} d"
