"""The heartbeat and deadline state machine: pure, fed timestamps, answers actions.

Rules (each one is tested with a fake clock in tests/core/test_liveness.py):

1. Any inbound byte is evidence of life (``on_receive``). A PONG is life too,
   but it does not restart the ping cadence (rule 2). Only the PONG of the
   latest PING, echoing its seq and stamp, once, is an RTT sample, timed by our
   own clock: an unsolicited or repeated PONG cannot poison the RTT.
2. A PING goes out when nothing but PONGs has arrived for ``interval``. Pings
   sit on a grid anchored at the last non-PONG traffic: ``anchor + k*interval``,
   so the cadence does not drift by the round-trip time.
3. The peer is dead when nothing at all arrived for the effective timeout:
   ``timeout`` (fixed policy) or, adaptive, the silence at which phi reaches
   ``phi_threshold`` for the learned distribution of quiet gaps (Hayashibara
   et al. 2004, as in Akka and Cassandra), kept within [min_timeout, timeout].
4. A stalled observer is not a dead peer (Cassandra's max_local_pause,
   memberlist's Lifeguard): when ``handle_timer`` runs later than the time its
   timer was armed for (``armed``) by more than ``stall_threshold``, our own
   process was stalled.
   The silence is not blamed on the peer: its clock restarts now, and the stall
   is recorded for the verdict.
5. While reading is paused by us (our application's inbox is full), silence is
   ours too: no verdict until reading resumes, and the clock restarts then.
6. Only one side needs to ping. The accepting side waits ``answer_delay``
   longer before its first ping, so while the connecting side's pings arrive
   on time it never pings at all (half the heartbeat traffic), yet it still
   pings by itself when the peer's pings stop.
   With ``batch_pings`` a side pings *ahead* of its peer instead: every
   ``period`` (``interval`` less two grid steps, of the shorter of the two
   sides' intervals) on a shared grid of ``interval / GRID_STEPS`` steps, so
   one wake-up of a process holding many connections writes the PINGs of all
   those on one grid point and their PONGs come back together; its peers,
   hearing a PING before their own ``interval`` of quiet, never ping.
7. A peer sending more than ``max_pings_per_interval`` pings within one
   ping window (the shorter of our interval and the one it announced in HELLO,
   but at least ``MIN_PING_WINDOW``)
   intervals is abusive (gRPC's too_many_pings).

The machine never reads a clock: every method takes ``now`` (seconds, any
monotonic origin), so tests move time with arithmetic.

Its next deadline is a plain attribute, ``due``, kept current by every event: a
timer structure holding thousands of machines compares ``due`` with the time it
armed and re-arms a deadline that moved later without calling in (every PING
received moves it; at 10,000 idle connections these stale wake-ups were a
quarter of the server's CPU). An adapter that re-arms so writes ``armed``.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from statistics import NormalDist

from peerwatch.core.config import Config
from peerwatch.core.shared import shared

#: Shortest ping window a peer can claim through a short announced interval.
MIN_PING_WINDOW = 0.1
#: Samples of quiet gaps kept for the adaptive policy.
ARRIVAL_WINDOW = 100
#: ``batch_pings``: grid points per interval. Finer spreads a server's PINGs over more
#: wake-ups; coarser pings earlier than needed (``LEAD_STEPS`` steps ahead of the peer).
GRID_STEPS = 32
#: ``batch_pings``: how many grid steps ahead of the peer's own ping we ping. The first
#: PING lands within half a step of its time, so the peer hears it at least 1.5 steps
#: (0.47 s at a 10 s interval) before its own interval of quiet ends.
LEAD_STEPS = 2


class Action(enum.Enum):
    NONE = "none"
    PING = "ping"  # send a PING now
    DEAD = "dead"  # the deadline passed: decide the verdict now


# module constants: ``Action.NONE`` looks the member up on the class at every use
NONE, PING, DEAD = Action.NONE, Action.PING, Action.DEAD


_QUANTILES: dict[float, float] = {}


def phi_quantile(phi_threshold: float) -> float:
    """The normal quantile at which phi reaches ``phi_threshold``: once per setting, not per
    connection (``inv_cdf`` was a measured part of accepting one)."""
    quantile = _QUANTILES.get(phi_threshold)
    if quantile is None:
        quantile = NormalDist().inv_cdf(1.0 - 10.0 ** (-phi_threshold))
        if len(_QUANTILES) < 64:  # a handful of settings per process; never unbounded
            _QUANTILES[phi_threshold] = quantile
    return quantile


class ArrivalWindow:
    """Running mean and deviation of the last ``ARRIVAL_WINDOW`` quiet gaps (seconds)."""

    __slots__ = ("_samples", "_sum", "_sumsq")

    def __init__(self) -> None:
        # made at the first sample: an empty deque costs 760 bytes, and a connection
        # with the fixed policy never learns a gap (10,000 idle connections: 7 MiB)
        self._samples: deque[float] | None = None
        self._sum = 0.0
        self._sumsq = 0.0

    @property
    def samples(self) -> deque[float]:
        if self._samples is None:
            self._samples = deque()
        return self._samples

    def add(self, gap: float) -> None:
        samples = self.samples
        samples.append(gap)
        self._sum += gap
        self._sumsq += gap * gap
        if len(samples) > ARRIVAL_WINDOW:
            old = samples.popleft()
            self._sum -= old
            self._sumsq -= old * old

    def __len__(self) -> int:
        return 0 if self._samples is None else len(self._samples)

    @property
    def mean(self) -> float:
        return self._sum / len(self)

    @property
    def std(self) -> float:
        n = len(self)
        return math.sqrt(max(0.0, self._sumsq / n - (self._sum / n) ** 2))


def phi(silence: float, mean: float, std: float) -> float:
    """Suspicion level -log10(P(a gap this long or longer)) under a normal model."""
    tail = 1.0 - NormalDist(mean, std).cdf(silence)
    return math.inf if tail <= 0 else -math.log10(tail)


#: The fixed policy's window: never added to (``_learn`` runs for the adaptive one only).
_NO_GAPS = ArrivalWindow()


class Liveness:
    """Per-connection heartbeat machine. ``handle_timer(now)`` at ``next_deadline()``."""

    __slots__ = (
        "_gaps",
        "_ping_count",
        "_ping_window_start",
        "_z",
        "acceptable_pause",
        "adaptive",
        "armed",
        "batched",
        "due",
        "due_is_ping",
        "effective_timeout",
        "grid",
        "interval",
        "last_heard",
        "last_ping",
        "last_traffic",
        "local_stall",
        "max_pings",
        "min_gap_sample",
        "min_std",
        "min_timeout",
        "paused",
        "period",
        "ping_seq",
        "ping_stamp",
        "ping_window",
        "pong_due",
        "pongs_received",
        "quiet",
        "rtt",
        "rtt_sample",
        "rttvar",
        "stall_threshold",
        "stalls",
        "timeout",
    )

    def __init__(
        self,
        config: Config,
        now: float,
        *,
        answer_delay: float = 0.0,
        peer_interval: float | None = None,
    ) -> None:
        self.interval = config.interval
        self.timeout = config.timeout
        self.batched = config.batch_pings
        self.adaptive = config.policy == "adaptive"
        self.min_timeout = shared(config.effective_min_timeout)
        self.acceptable_pause = config.acceptable_pause
        self.stall_threshold = shared(config.effective_stall_threshold)
        self.max_pings = config.max_pings_per_interval
        # Akka's min-std-deviation, scaled to the interval
        self.min_std = shared(self.interval / 4)
        self.min_gap_sample = self.min_std  # shorter gaps say nothing about quiet periods
        self._z = phi_quantile(config.phi_threshold)
        # only the adaptive policy learns gaps: the fixed one shares an empty window
        self._gaps = ArrivalWindow() if self.adaptive else _NO_GAPS
        self.last_ping = -math.inf
        self.ping_seq = 0
        # the stamp of our latest PING, kept to check its PONG's echo: recomputing it from
        # ``pong_due`` was 5 % of an idle heartbeat's instructions (bench/heartbeat_cost.py)
        self.ping_stamp = 0
        self.pong_due: float | None = None  # when the PING awaiting its PONG was sent
        self.rtt: float | None = None  # smoothed round-trip time (RFC 6298 weights)
        self.rttvar = 0.0
        self.pongs_received = 0  # replies to our pings (what ping(8) calls "received")
        self.rtt_sample: float | None = None  # the last reply's own round trip, unsmoothed
        self.paused = False
        self.local_stall = 0.0  # longest stall of our own process seen (s)
        self.stalls = 0
        self._ping_count = 0
        self.start(now, answer_delay=answer_delay, peer_interval=peer_interval)

    def start(
        self, now: float, *, answer_delay: float = 0.0, peer_interval: float | None = None
    ) -> None:
        """(Re)start the clocks at ``now`` with the handshake's terms: the protocol makes
        one machine per connection and starts it again when the peer's HELLO arrives."""
        if self.batched:  # rule 6, batched: ping ahead of the peer, on the shared grid
            base = self.interval if peer_interval is None else min(self.interval, peer_interval)
            self.grid = shared(base / GRID_STEPS)
            self.period = self.quiet = shared(base - LEAD_STEPS * self.grid)
        else:
            self.grid = 0.0
            self.period = self.interval  # between our own pings while only PONGs arrive
            # quiet time before the first ping
            self.quiet = shared(self.interval + answer_delay)
        # a peer that announced a shorter interval may ping that often: judge it by its own
        self.ping_window = self.interval
        if peer_interval is not None:
            self.ping_window = min(self.interval, max(peer_interval, MIN_PING_WINDOW))
        self.last_heard = now  # last evidence of life of any kind
        self.last_traffic = now  # last inbound other than PONG: anchors the ping grid
        self._ping_window_start = now
        if len(self._gaps):  # quiet gaps learned before the handshake are forgotten
            self._gaps = ArrivalWindow()
        self.effective_timeout = self.min_timeout if self.adaptive else self.timeout
        self._refresh()
        self.armed = self.due  # the time the adapter's timer is set for (rule 4)

    # --- events -------------------------------------------------------------

    def on_receive(self, now: float) -> None:
        """Bytes arrived from the peer (any frame but a PONG alone)."""
        gap = now - self.last_heard
        if self.adaptive and gap >= self.min_gap_sample:
            self._learn(gap)
        self.last_heard = now
        self.last_traffic = now
        self._refresh()

    def on_pong(self, now: float, seq: int, stamp: int) -> float | None:
        """A PONG arrived; returns the RTT sample, or None when it answered no PING of ours.

        Life either way (rule 1). Only the PONG of our latest PING, echoing its seq
        and stamp, is timed, once, and by our clock (the stamp is the peer's to
        forge); a PONG for a superseded PING is late life, not a sample.
        """
        gap = now - self.last_heard
        if self.adaptive and gap >= self.min_gap_sample:
            self._learn(gap)
        self.last_heard = now
        if not self.due_is_ping:  # else ``due`` is the PING, which a later dead_at leaves be
            self._refresh()
        sent_at = self.pong_due
        if sent_at is None or seq != self.ping_seq or stamp != self.ping_stamp:
            return None
        self.pong_due = None
        sample = now - sent_at if now > sent_at else 0.0  # no builtins: once per heartbeat
        self.pongs_received += 1
        self.rtt_sample = sample
        rtt = self.rtt
        if rtt is None:
            self.rtt = sample
            self.rttvar = sample / 2
        else:
            error = rtt - sample
            self.rttvar = 0.75 * self.rttvar + 0.25 * (error if error >= 0.0 else -error)
            self.rtt = 0.875 * rtt + 0.125 * sample
        return sample

    def on_ping_received(self, now: float) -> bool:
        """The peer pinged us; False when it pings more often than allowed."""
        if now - self._ping_window_start >= self.ping_window:
            self._ping_window_start = now
            self._ping_count = 0
        self._ping_count += 1
        return self._ping_count <= self.max_pings

    def on_ping(self, now: float) -> bool:
        """A read that was one PING alone: ``on_ping_received`` and, within the limit, the
        life of ``on_receive``, in one call (the idle connection's commonest event)."""
        if not self.on_ping_received(now):
            return False
        self.on_receive(now)
        return True

    def pause(self) -> None:
        """Reading paused by us: the silence that follows is not the peer's."""
        self.paused = True
        self._refresh()

    def resume(self, now: float) -> None:
        self.paused = False
        self.last_heard = max(self.last_heard, now)
        self.last_traffic = max(self.last_traffic, now)
        self._refresh()

    # --- timer --------------------------------------------------------------

    def next_ping_at(self) -> float:
        anchor = self.last_traffic
        at = self.last_ping + self.period if self.last_ping > anchor else anchor + self.quiet
        grid = self.grid
        return round(at / grid) * grid if grid else at

    def dead_at(self) -> float:
        return self.last_heard + self.effective_timeout

    def _refresh(self) -> None:
        """Recompute ``due`` after an event moved one of its parts."""
        # while paused by us, silence is ours: only the ping cadence is due (rule 5)
        last_ping = self.last_ping  # next_ping_at(), inlined: this runs on every read
        ping_at = (
            last_ping + self.period
            if last_ping > self.last_traffic
            else (self.last_traffic + self.quiet)
        )
        grid = self.grid
        if grid:  # the nearest grid point: a pass up to half a step late does not drift
            ping_at = round(ping_at / grid) * grid
        dead_at = self.last_heard + self.effective_timeout
        # which of the two ``due`` is lets the commonest events skip this (``on_pong``) and
        # the commonest timer skip recomputing both (``take_ping``)
        self.due_is_ping = self.paused or ping_at < dead_at
        self.due = ping_at if self.due_is_ping else dead_at

    def deadline(self) -> float:
        """When ``handle_timer`` must run next (absolute, same clock as ``now``); no side effect."""
        return self.due

    def next_deadline(self) -> float:
        """``due``, remembered as the time the timer is armed for (stall detection)."""
        deadline = self.armed = self.due
        return deadline

    def handle_timer(self, now: float) -> Action:
        """Decide what is due at ``now``: a death verdict, a ping, or nothing."""
        late = now - self.armed
        if late > self.stall_threshold:
            # Our own process did not run when it should have (rule 4).
            self.stalls += 1
            self.local_stall = max(self.local_stall, late)
            self.last_heard = max(self.last_heard, now)
            self.last_ping = -math.inf  # ping at once: a fresh, fair chance
            self.last_traffic = min(self.last_traffic, now - self.quiet)
            self._refresh()
        if not self.paused and now >= self.dead_at():
            return DEAD
        if now >= self.next_ping_at():
            return PING
        return NONE

    def ping_sent(self, now: float) -> tuple[int, int]:
        """Record a PING sent at ``now``; returns (seq, stamp) to put in it."""
        self.last_ping = now
        self._refresh()
        self.pong_due = now
        self.ping_seq = (self.ping_seq + 1) & 0xFFFFFFFF
        # the stamp: the send time in microseconds, as the u64 on the wire holds it
        self.ping_stamp = stamp = round(now * 1_000_000) & 0xFFFFFFFFFFFFFFFF
        return self.ping_seq, stamp

    def take_ping(self, now: float) -> tuple[int, int] | None:
        """When ``handle_timer(now)`` would answer PING and change nothing else (no stall of
        ours, the peer not dead): the PING recorded as sent (``ping_sent``) and the timer
        armed for what follows (``next_deadline``); its (seq, stamp). None: nothing
        happened, run ``handle_timer``.

        One call for a ``batch_pings`` server's commonest timer, once per connection per
        interval, in place of the general path's check, ``ping_sent`` and ``next_deadline``
        (issue 13; bench/heartbeat_cost.py). The check is written out (``due_is_ping``
        spares recomputing both deadlines); a hypothesis test holds the whole to the
        general path: the same answer and the same state.
        """
        if not (
            self.due_is_ping  # then ``due`` is ``next_ping_at()``, kept by ``_refresh``
            and now >= self.due
            and now - self.armed <= self.stall_threshold
            and (self.paused or now < self.last_heard + self.effective_timeout)  # dead_at()
        ):
            return None
        sent = self.ping_sent(now)
        self.armed = self.due
        return sent

    # --- queries ------------------------------------------------------------

    def silent_for(self, now: float) -> float:
        return max(0.0, now - self.last_heard)

    def _learn(self, gap: float) -> None:
        self._gaps.add(gap)
        if len(self._gaps) >= 2:
            std = max(self._gaps.std, self.min_std)
            learned = self._gaps.mean + self.acceptable_pause + self._z * std
            self.effective_timeout = min(self.timeout, max(self.min_timeout, learned))
            self._refresh()
