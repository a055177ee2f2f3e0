"""Settings, validated once at configuration time so a bad combination fails early."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Literal, TypedDict

from peerwatch.core.frames import MIN_CHUNK, MIN_MAX_FRAME
from peerwatch.errors import ConfigError

Policy = Literal["fixed", "adaptive"]

#: Hard ceiling on max_frame: the length prefix is 32 bits, but a single frame of
#: more than 64 MiB would let one peer pin that much of our memory.
MAX_FRAME_CEILING = 64 * 1024 * 1024
#: Silence that TCP's own loss recovery can cause on a LAN: three retransmissions at
#: Linux's 200 ms minimum RTO, doubling (0.2 + 0.4 + 0.8 s).
TCP_LOSS_RECOVERY = 1.4
#: Where ``serve`` listens when no host is given: loopback only. Serving the network is a
#: decision (``"0.0.0.0"``, ``"::"``, or ``None`` for every interface), never a default.
DEFAULT_HOST = "127.0.0.1"
#: File descriptors a server leaves free below RLIMIT_NOFILE (beyond those open when it
#: starts) for its handler, logging and metrics: its connection cap is the rest.
FD_RESERVE = 64
#: How long a connection may wait for its HELLO before, with the handshake allowance
#: full, it can be dropped to make room: a real peer sends HELLO within one round trip.
HANDSHAKE_GRACE = 1.0


@dataclass(frozen=True)
class Config:
    """How a connection watches its peer, and the limits that protect this process.

    ``interval``: send a PING after this many seconds with nothing heard.
    ``timeout``: declare the peer dead after this many seconds with nothing heard.
    ``policy="adaptive"`` lets the effective timeout follow the measured arrival
    distribution (phi accrual), never below ``min_timeout`` and never above ``timeout``.
    """

    interval: float = 1.0
    timeout: float = 5.0
    policy: Policy = "fixed"
    # adaptive (phi accrual, Hayashibara et al. 2004)
    phi_threshold: float = 8.0
    min_timeout: float | None = None  # adaptive floor; default max(2 x interval, interval + 1.4)
    acceptable_pause: float = 0.0  # extra silence tolerated on top of the distribution
    # local stall awareness: a gap in our own timer this much past its deadline is a stall
    stall_threshold: float | None = None  # default: min(interval, timeout / 4)
    # limits
    max_frame: int = 1024 * 1024
    chunk_size: int = 64 * 1024
    max_message: int = 16 * 1024 * 1024  # largest reassembled message accepted from the peer
    handshake_timeout: float = 5.0
    send_queue: int = 1024  # messages waiting for the wire before send()/enqueue() blocks
    recv_queue: int = 1024  # messages waiting for recv() before we stop reading the socket
    recv_buffer: int = 8 * 1024 * 1024  # bytes of such messages before we stop reading
    send_buffer: int = 8 * 1024 * 1024  # bytes unacknowledged before send()/enqueue() blocks
    max_pings_per_interval: int = 10  # a peer pinging faster gets GOODBYE(too many pings)
    # ping ahead of the peer, on a grid shared by every connection (liveness rule 6): for a
    # server holding many idle connections, whose peers' own pings would wake it at random
    batch_pings: bool = False
    close_timeout: float = 1.0  # how long close() waits for the peer's GOODBYE/FIN
    kernel_knobs: bool = True  # keepalive + TCP_USER_TIMEOUT as a backup to heartbeats
    # server-wide limits, applied by serve() (a client connection has no use for them)
    max_handshakes: int = 64  # connections in their handshake (no HELLO yet) held at once
    memory_budget: int = 256 * 1024 * 1024  # bytes all connections of a server hold for peers

    def __post_init__(self) -> None:
        for name in ("interval", "timeout", "handshake_timeout", "close_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.timeout <= self.interval:
            raise ConfigError(
                f"timeout ({self.timeout} s) must be longer than interval ({self.interval} s): "
                "the peer would be declared dead before it was even asked for a sign of life"
            )
        if self.policy not in ("fixed", "adaptive"):
            raise ConfigError(f"policy must be 'fixed' or 'adaptive', got {self.policy!r}")
        if self.min_timeout is not None and not (self.interval < self.min_timeout <= self.timeout):
            raise ConfigError(
                f"min_timeout ({self.min_timeout} s) must lie in (interval, timeout]"
                f" = ({self.interval}, {self.timeout}]"
            )
        if self.phi_threshold <= 0:
            raise ConfigError(f"phi_threshold must be positive, got {self.phi_threshold}")
        if self.acceptable_pause < 0:
            raise ConfigError(f"acceptable_pause must be >= 0, got {self.acceptable_pause}")
        if self.stall_threshold is not None and self.stall_threshold <= 0:
            raise ConfigError(f"stall_threshold must be positive, got {self.stall_threshold}")
        # the floors are the ones a peer's HELLO is held to (frames.MIN_MAX_FRAME)
        if not MIN_MAX_FRAME <= self.max_frame <= MAX_FRAME_CEILING:
            raise ConfigError(
                f"max_frame must lie in [{MIN_MAX_FRAME}, {MAX_FRAME_CEILING}],"
                f" got {self.max_frame}"
            )
        if not MIN_CHUNK <= self.chunk_size <= self.max_frame - 64:
            raise ConfigError(
                f"chunk_size must lie in [{MIN_CHUNK}, max_frame - 64]"
                f" = [{MIN_CHUNK}, {self.max_frame - 64}], got {self.chunk_size}"
            )
        if self.max_message < 1:
            raise ConfigError(f"max_message must be at least 1, got {self.max_message}")
        for name in (
            "send_queue",
            "recv_queue",
            "recv_buffer",
            "send_buffer",
            "max_pings_per_interval",
            "max_handshakes",
            "memory_budget",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def effective_min_timeout(self) -> float:
        """Floor of the adaptive timeout: one missed ping plus TCP's loss recovery.

        A lost segment is retransmitted after 0.2, 0.6, 1.4 s (Linux's minimum RTO,
        doubling), so a floor under ``interval + 1.4`` turns three losses in a row,
        or a short cable pull, into a false verdict (measured in the lab).
        """
        if self.min_timeout is not None:
            return self.min_timeout
        return min(max(2 * self.interval, self.interval + TCP_LOSS_RECOVERY), self.timeout)

    @property
    def effective_stall_threshold(self) -> float:
        if self.stall_threshold is not None:
            return self.stall_threshold
        return min(self.interval, self.timeout / 4)

    @property
    def kernel_bound(self) -> float:
        """Bound for the kernel backup: just after the heartbeat verdict, so ours comes first."""
        return self.timeout + self.interval

    def with_(self, **changes: object) -> Config:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_overrides(cls, config: Config | None, overrides: Mapping[str, object]) -> Config:
        """``config`` (or the defaults) with keyword settings applied: ``interval=0.5``.

        The one place ``connect``, ``serve`` and their blocking twins turn their
        keyword settings into a ``Config``. A name that is no setting is a
        ``ConfigError`` naming the closest one (mypy catches it earlier: the
        keywords are typed by ``Settings``).
        """
        base = config if config is not None else cls()
        if not overrides:
            return base
        known = [field.name for field in fields(cls)]
        for name in overrides:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown setting {name!r}{hint}")
        return replace(base, **overrides)  # type: ignore[arg-type]


class Settings(TypedDict, total=False):
    """The keyword settings of ``connect``, ``serve`` and ``peerwatch.sync``: ``Config``'s
    fields, typed, so that ``mypy --strict`` catches a misspelt name or a wrong type
    (``**settings: Unpack[Settings]``). A test holds it to ``Config``'s fields."""

    interval: float
    timeout: float
    policy: str  # "fixed" or "adaptive", checked by Config: a str read from a file needs no cast
    phi_threshold: float
    min_timeout: float | None
    acceptable_pause: float
    stall_threshold: float | None
    max_frame: int
    chunk_size: int
    max_message: int
    handshake_timeout: float
    send_queue: int
    recv_queue: int
    recv_buffer: int
    send_buffer: int
    max_pings_per_interval: int
    batch_pings: bool
    close_timeout: float
    kernel_knobs: bool
    max_handshakes: int
    memory_budget: int
