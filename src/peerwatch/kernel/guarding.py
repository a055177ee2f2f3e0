"""``guard(sock)``: kernel-level dead-peer detection for sockets peerwatch does not own.

Most TCP connections in a Python program belong to a database driver, a Redis
client or an HTTP pool. They speak their own protocol, so peerwatch cannot add
heartbeats to them, but the kernel can still be told to give up on a dead peer
in bounded time, and then the library's next (or current, blocked) call fails
with ETIMEDOUT instead of hanging:

- SO_KEEPALIVE with short idle/interval timers makes the kernel probe an idle
  connection, so a peer that vanished while nothing was being sent is noticed.
- TCP_USER_TIMEOUT bounds how long sent data may stay unacknowledged, so a peer
  that vanished while data is in flight is noticed too; when set it also
  replaces the keepalive probe count as the give-up rule (Linux
  ``tcp_keepalive_timer``: give up once nothing was received for the user
  timeout and at least one probe went unanswered).

What the kernel measures, precisely (this is what ``GuardResult`` reports):
an idle connection fails ``idle_bound`` seconds after the last segment
received from the peer; data in flight fails ``timeout`` seconds after it was
first sent. Both are counted from evidence the kernel has, so after a fault the
error arrives within those bounds. Neither notices a peer whose kernel is alive
but whose application hangs: only an application heartbeat does.

The option values come from ``peerwatch.kernel.knobs`` (one derivation for the whole
project), with one correction: Linux counts TCP_USER_TIMEOUT from the first
*RTO retransmission* (``tp->retrans_stamp``), not from the original send. A
lone segment is first re-sent as a tail loss probe after ``2*srtt + 200 ms``
(RFC 8985; not counted) and only then by the retransmission timer, one RTO
later. Measured on a veth pair: user timeout 3000 ms, one small write to a
blackholed peer, ETIMEDOUT after 3.42 s. So guard() subtracts that lead time,
estimated from the socket's own TCP_INFO (rtt, rto), to keep the promise
counted from the send. TCP_NODELAY is left alone by default, because changing
Nagle on a foreign library's socket changes its latency, not its liveness.

(The module is not called ``guard`` so that the package can export the
function ``peerwatch.guard`` without a submodule of that name shadowing it.)
"""

from __future__ import annotations

import dataclasses
import math
import socket
from dataclasses import dataclass

from peerwatch.errors import ConfigError
from peerwatch.kernel.borrowing import SocketRef, borrow, descriptor_of
from peerwatch.kernel.knobs import Applied, KernelKnobs, Outcome, apply_knobs, knobs_for
from peerwatch.kernel.tcpinfo import tcp_info

__all__ = ["GuardResult", "guard"]

_IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)
#: Linux TCP_RTO_MIN (200 ms): the floor of the RTO, and what a tail loss probe
#: adds to 2*srtt when a single segment is outstanding (tcp_schedule_loss_probe).
RTO_MIN = 0.2


@dataclass(frozen=True)
class GuardResult:
    """What ``guard()`` did to one socket, and the detection bounds that follow from it."""

    timeout: float  # the bound asked for, in seconds
    knobs: KernelKnobs  # the option values derived from it (user timeout already corrected)
    applied: Applied  # per option: "set", "unavailable" on this platform, or "failed"
    retransmit_lead: float = 0.0  # s before the first RTO retransmission, taken off the timeout

    @property
    def options(self) -> dict[str, Outcome]:
        return dict(self.applied.options)

    @property
    def complete(self) -> bool:
        """True when every option was set: both bounds below hold."""
        return self.applied.complete

    @property
    def user_timeout_set(self) -> bool:
        return self.applied.options.get("TCP_USER_TIMEOUT") == "set"

    @property
    def keepalive_set(self) -> bool:
        names = ("SO_KEEPALIVE", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT")
        return all(self.applied.options.get(n) == "set" for n in names)

    @property
    def idle_bound(self) -> float | None:
        """Seconds after the last segment from the peer that an idle connection fails.

        With TCP_USER_TIMEOUT the kernel gives up at the first keepalive timer
        firing (``idle + k * interval``, k >= 1) at which nothing was heard for
        the user timeout; without it, after ``count`` unanswered probes. None
        when keepalive could not be enabled: an idle dead peer is never noticed.
        """
        if not self.keepalive_set:
            return None
        k = self.knobs
        if self.user_timeout_set and k.user_timeout_ms > 0:
            user_timeout = k.user_timeout_ms / 1000
            probes = max(1, math.ceil((user_timeout - k.keepalive_idle) / k.keepalive_interval))
            return float(k.keepalive_idle + probes * k.keepalive_interval)
        return float(k.keepalive_bound)

    @property
    def busy_bound(self) -> float | None:
        """Seconds after a send to a dead peer that the call fails; None: kernel default.

        The user timeout plus the lead time before the first RTO retransmission
        (estimated from this socket's rtt and rto when guarded). Without
        TCP_USER_TIMEOUT the kernel's ``tcp_retries2`` rule applies (about 15
        minutes with Linux defaults).
        """
        if not self.user_timeout_set:
            return None
        return round(self.knobs.user_timeout_ms / 1000 + self.retransmit_lead, 3)

    def describe(self) -> str:
        idle = "never (no keepalive)" if self.idle_bound is None else f"{self.idle_bound:g} s"
        busy = "kernel default" if self.busy_bound is None else f"{self.busy_bound:g} s"
        k = self.knobs
        return (
            f"idle peer death noticed after {idle}, unacknowledged data after {busy} "
            f"(keepalive {k.keepalive_idle}+{k.keepalive_interval}x{k.keepalive_count} s, "
            f"user timeout {k.user_timeout_ms} ms; {self.applied.describe()})"
        )

    def as_dict(self) -> dict[str, object]:
        k = self.knobs
        return {
            "timeout": self.timeout,
            "options": self.options,
            "errors": dict(self.applied.errors),
            "keepalive_idle": k.keepalive_idle,
            "keepalive_interval": k.keepalive_interval,
            "keepalive_count": k.keepalive_count,
            "user_timeout_ms": k.user_timeout_ms,
            "retransmit_lead": self.retransmit_lead,
            "idle_bound": self.idle_bound,
            "busy_bound": self.busy_bound,
        }


def guard(
    sock: SocketRef,
    timeout: float = 10.0,
    *,
    probes: int = 3,
    nodelay: bool = False,
    idle_limit: float | None = None,
) -> GuardResult:
    """Make the kernel turn a dead peer into an error on ``sock`` within ``timeout`` seconds.

    ``sock`` is a connected (or listening: accepted sockets inherit the options)
    TCP socket, anything with ``fileno()``, or a bare descriptor; the caller keeps
    ownership, nothing is closed. ``probes`` is the number of keepalive probes
    sent before giving up (more probes = more tolerance of lost probes, shorter
    interval). Options the platform lacks are reported as ``unavailable``, never
    silently assumed: check ``result.complete`` or ``result.describe()``.
    ``idle_limit``: a middlebox's idle timeout; the first keepalive probe comes before it.

    Raises ``ConfigError`` for a bad timeout or a descriptor that is not a TCP socket.
    """
    knobs = knobs_for(timeout, probes=probes, nodelay=nodelay, idle_limit=idle_limit)
    fd = descriptor_of(sock)
    if fd < 0:
        raise ConfigError("guard() needs an open socket; this one is closed")
    try:
        view = borrow(fd)
    except OSError as exc:
        raise ConfigError(f"guard() needs a TCP socket; descriptor {fd} is not a socket") from exc
    try:
        _require_tcp(view, fd)
        lead = min(retransmit_lead(view), timeout / 2)
        knobs = with_lead(knobs, timeout, lead)
        applied = apply_knobs(view, knobs)
    finally:
        view.detach()  # the descriptor belongs to the caller
    return GuardResult(
        timeout=float(timeout), knobs=knobs, applied=applied, retransmit_lead=round(lead, 3)
    )


def with_lead(knobs: KernelKnobs, timeout: float, lead: float) -> KernelKnobs:
    """``knobs`` with the user timeout shortened by ``lead`` (see the module docstring)."""
    return dataclasses.replace(knobs, user_timeout_ms=max(1, round((timeout - lead) * 1000)))


#: The lead on a socket with no RTT sample yet (not connected): the kernel's floors.
FRESH_SOCKET_LEAD = 2 * RTO_MIN


def retransmit_lead(sock: socket.socket) -> float:
    """Seconds from sending a lone segment to its first RTO retransmission, for this socket.

    A tail loss probe after ``2*srtt + RTO_MIN``, then the RTO. Before any RTT
    sample (listening or fresh sockets), the kernel's floors: ``2 * RTO_MIN``.
    Off Linux (no TCP_INFO, no TCP_USER_TIMEOUT) it does not matter: 0.
    """
    info = tcp_info(sock)
    if info is None:
        return 0.0
    if info.rtt_us == 0:
        return FRESH_SOCKET_LEAD
    return 2 * info.rtt_us / 1e6 + RTO_MIN + max(info.rto_us / 1e6, RTO_MIN)


def _require_tcp(view: socket.socket, fd: int) -> None:
    kind = view.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
    so_protocol = getattr(socket, "SO_PROTOCOL", None)  # Linux; elsewhere trust the type
    protocol = (
        view.getsockopt(socket.SOL_SOCKET, so_protocol)
        if so_protocol is not None
        else socket.IPPROTO_TCP
    )
    if (
        view.family not in (socket.AF_INET, socket.AF_INET6)
        or kind != socket.SOCK_STREAM
        or protocol not in (socket.IPPROTO_TCP, _IPPROTO_MPTCP)
    ):
        raise ConfigError(
            f"guard() needs a TCP socket; descriptor {fd} is "
            f"family {view.family!s}, type {kind}, protocol {protocol}"
        )
