"""Why a connection ended: one ``Verdict`` per connection, with its ``Cause`` and evidence.

All translation from OS results to causes happens here (``classify_os_error``),
with named errno sets, so every adapter tells the same story for the same event.
"""

from __future__ import annotations

import enum
import errno
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peerwatch.tcpinfo import TcpInfo


class Cause(str, enum.Enum):
    """Machine-readable reason a connection is over (like Erlang's nodedown_reason)."""

    GOODBYE = "GOODBYE"  # the peer closed deliberately, with a GOODBYE frame
    EOF = "EOF"  # the peer's side closed without goodbye: process exited or was killed
    RESET = "RESET"  # RST: crash with unread data, rebooted host, abort
    TIMEOUT = "TIMEOUT"  # the kernel gave up (ETIMEDOUT): retransmissions or keepalive exhausted
    UNREACHABLE = "UNREACHABLE"  # no route to the peer (EHOSTUNREACH, ENETUNREACH, ...)
    SILENT = "SILENT"  # nothing heard within the deadline, and the peer's kernel is silent too
    HUNG = "HUNG"  # the peer's kernel still acknowledges, its application does not answer
    PROTOCOL = "PROTOCOL"  # the peer broke the wire protocol
    LOCAL = "LOCAL"  # this side closed the connection

    def __str__(self) -> str:
        return self.value


#: Causes that end ``async for msg in conn`` quietly: an orderly end, not a failure.
QUIET_END = frozenset({Cause.GOODBYE, Cause.LOCAL, Cause.EOF})

#: errno values meaning "the peer answered with RST" (or the connection was aborted).
RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ECONNREFUSED})
#: errno values meaning "the kernel gave up waiting for the peer".
TIMEOUT_ERRNOS = frozenset({errno.ETIMEDOUT})
#: errno values meaning "there is no route to the peer".
UNREACHABLE_ERRNOS = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}
)
#: errno values that are not a verdict at all: retry (EINTR) or wait for readiness (EAGAIN).
RETRY_ERRNOS = frozenset({errno.EINTR, errno.EAGAIN, errno.EWOULDBLOCK, errno.EINPROGRESS})


def classify_os_error(exc: OSError) -> Cause | None:
    """Map an OSError from a socket call to a Cause; None when it is not a verdict (retry)."""
    code = exc.errno
    if code is None:
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return Cause.RESET
        if isinstance(exc, TimeoutError):
            return Cause.TIMEOUT
        return Cause.RESET
    if code in RETRY_ERRNOS:
        return None
    if code in RESET_ERRNOS:
        return Cause.RESET
    if code in TIMEOUT_ERRNOS:
        return Cause.TIMEOUT
    if code in UNREACHABLE_ERRNOS:
        return Cause.UNREACHABLE
    return Cause.RESET


def errno_name(exc: BaseException | None) -> str | None:
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return None


def hung_or_silent(info: TcpInfo | None, silent_for: float) -> Cause:
    """Tell a hung peer (kernel acks, app mute) from a silent one (nothing acks).

    The peer's kernel acknowledges our heartbeats even when its application is
    frozen. HUNG needs that evidence: an ACK received during the silence (our
    pings went out in it) and no retransmission pending. "Nothing outstanding"
    alone is not evidence: it also holds when we sent nothing. Without TCP_INFO
    (non-Linux) we cannot tell, and say SILENT.
    """
    if info is None:
        return Cause.SILENT
    acked_during_silence = info.last_ack_recv_ms / 1000.0 < silent_for
    if acked_during_silence and info.retransmits == 0 and info.backoff == 0:
        return Cause.HUNG
    return Cause.SILENT


@dataclass(frozen=True)
class Verdict:
    """The one and final word on a connection: why it ended, when, and what was lost."""

    cause: Cause
    detail: str  # human sentence with the evidence
    detected_at: float  # monotonic clock of the decision (time.monotonic domain)
    silent_for: float  # seconds since the last evidence of life from the peer
    errno: str | None = None  # errno name when an OS call said so (ECONNRESET, ETIMEDOUT, ...)
    tcp_info: TcpInfo | None = None  # kernel snapshot at detection (Linux)
    local_stall: float = 0.0  # longest stall of our own event loop seen on this connection (s)
    undelivered: tuple[bytes, ...] = ()  # messages sent but never acknowledged, in order
    goodbye_reason: str | None = None  # text of the peer's GOODBYE, if any
    detected_wall: float = field(default_factory=time.time)

    @property
    def peer_dead(self) -> bool:
        return self.cause is not Cause.LOCAL

    def describe(self) -> str:
        text = f"{self.cause.value}: {self.detail}"
        if self.errno:
            text += f" [{self.errno}]"
        if self.undelivered:
            text += f"; {len(self.undelivered)} message(s) not acknowledged"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "cause": self.cause.value,
            "detail": self.detail,
            "silent_for": round(self.silent_for, 6),
            "errno": self.errno,
            "local_stall": round(self.local_stall, 6),
            "undelivered": len(self.undelivered),
            "goodbye_reason": self.goodbye_reason,
            "detected_wall": self.detected_wall,
            "tcp_info": self.tcp_info.as_dict() if self.tcp_info else None,
        }
