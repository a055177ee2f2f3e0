"""Lab settings: the heartbeat settings under test and the kernel timers of the lab hosts.

The kernel timers that decide how long a dead peer goes unnoticed are per
network namespace sysctls (``/proc/sys/net/ipv4/...`` read inside the
namespace), so the lab shortens them on its own hosts only, to make a run take
minutes instead of hours. The report always prints the values used next to what
the real Linux defaults would give, computed here from the same rules the
kernel applies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from peerwatch.kernel.knobs import KernelKnobs, knobs_for

Mode = Literal["quick", "full"]

#: include/net/tcp.h: the floor and ceiling of the retransmission timeout.
TCP_RTO_MIN = 0.200
TCP_RTO_MAX = 120.0


@dataclass(frozen=True)
class KernelTimers:
    """The per-namespace TCP timers that govern detection by the kernel alone."""

    tcp_retries2: int  # retransmissions of unacknowledged data before ETIMEDOUT
    tcp_fin_timeout: int  # seconds an orphaned socket may stay in FIN_WAIT_2
    tcp_keepalive_time: int  # idle seconds before the first keepalive probe
    tcp_keepalive_intvl: int  # seconds between unanswered probes
    tcp_keepalive_probes: int  # unanswered probes before ETIMEDOUT
    tcp_orphan_retries: int = 0  # retries for an orphan's FIN (0 means the kernel's 8)

    def sysctls(self) -> dict[str, str]:
        """sysctl name (as under /proc/sys) -> value, for ``sysctl -w`` inside a lab host."""
        return {f"net.ipv4.{name}": str(value) for name, value in asdict(self).items()}

    @property
    def retransmission_timeout(self) -> float:
        """Seconds from an unacknowledged send to ETIMEDOUT (tcp_retries2, see below)."""
        return retries_timeout(self.tcp_retries2)

    @property
    def keepalive_bound(self) -> int:
        """Seconds an idle connection to a dead peer survives with SO_KEEPALIVE alone."""
        return self.tcp_keepalive_time + self.tcp_keepalive_intvl * self.tcp_keepalive_probes


#: What an untuned Linux host uses (Documentation/networking/ip-sysctl.rst).
LINUX_DEFAULTS = KernelTimers(
    tcp_retries2=15,
    tcp_fin_timeout=60,
    tcp_keepalive_time=7200,
    tcp_keepalive_intvl=75,
    tcp_keepalive_probes=9,
    tcp_orphan_retries=0,
)


def retries_timeout(boundary: int, rto_base: float = TCP_RTO_MIN) -> float:
    """The kernel's ``tcp_model_timeout``: when ``boundary`` retransmissions have timed out.

    Linux does not count retransmissions; it converts tcp_retries2 into a time
    assuming the RTO starts at TCP_RTO_MIN and doubles up to TCP_RTO_MAX
    (net/ipv4/tcp_timer.c). For the default 15 that is 924.6 s, "about 15 minutes".
    """
    linear_backoff_thresh = 0
    while (rto_base * (2 ** (linear_backoff_thresh + 1))) <= TCP_RTO_MAX:
        linear_backoff_thresh += 1  # ilog2(TCP_RTO_MAX / rto_base)
    if boundary <= linear_backoff_thresh:
        return ((2 << boundary) - 1) * rto_base
    return ((2 << linear_backoff_thresh) - 1) * rto_base + (
        boundary - linear_backoff_thresh
    ) * TCP_RTO_MAX


def retransmission_deadline(boundary: int, first_rto: float = TCP_RTO_MIN) -> float:
    """When ETIMEDOUT really fires: the first retransmission timer expiry past the model time.

    The kernel only checks the budget when the retransmission timer fires, and
    the timer starts at the measured RTO (a little above TCP_RTO_MIN on a LAN),
    doubling each time; so the error comes at the first expiry at or after
    ``retries_timeout(boundary)``.
    """
    budget = retries_timeout(boundary)
    elapsed, rto = 0.0, first_rto
    for _ in range(64):
        elapsed += rto
        if elapsed >= budget - 1e-9:
            return elapsed
        rto = min(rto * 2, TCP_RTO_MAX)
    return elapsed


def human_duration(seconds: float) -> str:
    """``7875`` -> ``2 h 11 min 15 s``; short durations keep one decimal."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours} h")
    if minutes:
        parts.append(f"{minutes} min")
    if secs:
        parts.append(f"{secs} s")
    return " ".join(parts)


@dataclass(frozen=True)
class LabSettings:
    """Everything a run depends on; quick and full differ only in these numbers."""

    mode: Mode
    interval: float  # heartbeat interval of peerwatch and websockets
    timeout: float  # their detection timeout: the configured bound
    timers: KernelTimers  # sysctls of the lab hosts
    warmup: float  # seconds of healthy connection before the fault
    cable_outage: float  # how long cable-pull leaves the cable out (< every bound)
    loss_percent: int  # random drop in each direction for the loss scenario
    loss_duration: float
    slow_duration: float  # how long the slow-reader scenario streams
    slow_read_bytes: int = 1024  # the slow reader reads this much...
    slow_read_pause: float = 0.25  # ...then sleeps this long
    bound_slack: float = 0.15  # fixed allowance on top of timeout x 1.1 (fault set-up, wake-ups)

    @property
    def bound(self) -> float:
        """Longest acceptable detection time for peerwatch: timeout + 10 % + a fixed allowance."""
        return self.timeout * 1.1 + self.bound_slack

    @property
    def tuned_knobs(self) -> KernelKnobs:
        """The keepalive-tuned and user-timeout options, as peerwatch.kernel.knobs derives them."""
        return knobs_for(self.timeout)

    @property
    def websockets_close_timeout(self) -> float:
        """websockets waits this long for the closing handshake after a ping timeout."""
        return self.interval

    @property
    def return_outage(self) -> float:
        """How long the peer is away in the scenarios where it comes back: 2 x the timeout,
        so every heartbeat must call the connection dead, and only a resumable session
        carries on (issue 12's cable pull)."""
        return 2 * self.timeout

    @property
    def resume_timeout(self) -> float:
        """How long the resumable client keeps trying (and the server keeps its session):
        the outage, the detection and a few reconnect attempts."""
        return 2 * self.timeout + self.bound + 8.0

    @property
    def idle_write_at(self) -> float:
        """When the idle client of power-off finally writes: after every keepalive gave up.

        Until then the connection is idle, which is when keepalive works and
        nothing else does; the write then shows what data in flight changes.
        """
        return float(max(self.timers.keepalive_bound, self.tuned_knobs.keepalive_bound) + 1)

    @property
    def retransmission_deadline(self) -> float:
        """Seconds from an unacknowledged write to ETIMEDOUT on the lab hosts."""
        return retransmission_deadline(self.timers.tcp_retries2)

    def with_(self, **changes: object) -> LabSettings:
        return replace(self, **changes)  # type: ignore[arg-type]


QUICK = LabSettings(
    mode="quick",
    interval=0.5,
    timeout=2.0,
    timers=KernelTimers(
        tcp_retries2=4,
        tcp_fin_timeout=3,
        tcp_keepalive_time=4,
        tcp_keepalive_intvl=1,
        tcp_keepalive_probes=2,
        tcp_orphan_retries=1,
    ),
    warmup=1.5,
    cable_outage=0.6,
    # 10 %, not the full run's 20 %: a 2 s timeout covers fewer of TCP's doubling
    # retransmissions (RTO 0.2, 0.4, 0.8 s ...) than the full run's 5 s. A segment lost
    # three or four times in a row leaves the peer's bytes behind a hole for 1.4-3 s,
    # while its kernel still ACKs ours: a silence that is HUNG by every sign the
    # kernel gives. Measured on the lab (quick, peerwatch, 30 runs each): 20 % loss
    # raised that false alarm in 3 of 29 runs, 10 % in 0 of 30.
    loss_percent=10,
    loss_duration=10.0,
    slow_duration=8.0,
)

FULL = LabSettings(
    mode="full",
    interval=1.0,
    timeout=5.0,
    timers=KernelTimers(
        tcp_retries2=6,
        tcp_fin_timeout=10,
        tcp_keepalive_time=10,
        tcp_keepalive_intvl=2,
        tcp_keepalive_probes=3,
        tcp_orphan_retries=1,
    ),
    warmup=3.0,
    cable_outage=2.0,
    loss_percent=20,
    loss_duration=40.0,
    slow_duration=25.0,
)


def settings_for(mode: Mode) -> LabSettings:
    return QUICK if mode == "quick" else FULL
