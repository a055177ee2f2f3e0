"""Why a connection ended: one ``Verdict`` per connection, with its ``Cause`` and evidence.

All translation from OS results to causes happens here (``classify_os_error``,
``explain_os_error``, ``errno_name``), with named errno sets, so every adapter
tells the same story for the same event. Two kinds of OSError carry codes that
are not POSIX errnos and are told apart first: ``socket.gaierror`` (getaddrinfo
codes: the name did not resolve) and ``ssl.SSLError`` (OpenSSL codes: the TLS
handshake or a TLS record failed).
"""

from __future__ import annotations

import enum
import errno
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peerwatch.kernel.tcpinfo import TcpInfo


class Cause(str, enum.Enum):
    """Machine-readable reason a connection is over (like Erlang's nodedown_reason)."""

    GOODBYE = "GOODBYE"  # the peer closed deliberately, with a GOODBYE frame
    EOF = "EOF"  # the peer's side closed without goodbye: process exited or was killed
    RESET = "RESET"  # RST: crash with unread data, rebooted host, abort
    TIMEOUT = "TIMEOUT"  # the kernel gave up (ETIMEDOUT): retransmissions or keepalive exhausted
    UNREACHABLE = "UNREACHABLE"  # no route (EHOSTUNREACH, ...), or the name does not resolve
    SILENT = "SILENT"  # nothing heard within the deadline, and the peer's kernel is silent too
    HUNG = "HUNG"  # the peer's kernel still acknowledges, its application does not answer
    PROTOCOL = "PROTOCOL"  # the peer broke the wire protocol, or the TLS handshake failed
    LOCAL = "LOCAL"  # this side closed the connection
    #: a resumable session could not go on (detail starts with the core's LostCause)
    SESSION_LOST = "SESSION_LOST"

    def __str__(self) -> str:
        return self.value


#: Causes that end ``async for msg in conn`` (and ``for msg in conn``) quietly: an end
#: someone decided, the peer with GOODBYE or this side with ``close()``. Every other end
#: raises, EOF included: a peer process that dies makes its kernel send FIN, or RST when
#: our last bytes were still unread in its buffer, a race and not a decision, so FIN and
#: RST must end the loop the same way (websockets' ConnectionClosedError for 1006, too).
QUIET_END = frozenset({Cause.GOODBYE, Cause.LOCAL})

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


def _is_a(exc: BaseException | None, module: str, name: str) -> bool:
    """``isinstance(exc, module.name)`` without importing ``module``.

    An exception of a module nobody imported cannot exist, so looking the class up
    in ``sys.modules`` is exact, and keeps ``import peerwatch`` free of ssl and socket.
    """
    kind = getattr(sys.modules.get(module), name, None)
    return isinstance(kind, type) and isinstance(exc, kind)


def _is_name_resolution_error(exc: BaseException | None) -> bool:
    return _is_a(exc, "socket", "gaierror")


def _is_tls_error(exc: BaseException | None) -> bool:
    return _is_a(exc, "ssl", "SSLError")


def classify_os_error(exc: OSError) -> Cause | None:
    """Map an OSError from a socket call to a Cause; None when it is not a verdict (retry).

    A name that does not resolve is UNREACHABLE; a TLS failure is PROTOCOL (the
    peer did not complete the TLS protocol with us: a rejected certificate, a
    failed handshake, a corrupt record), except an unexpected end of the TLS
    stream, which is the peer going away (EOF).
    """
    if _is_name_resolution_error(exc):
        return Cause.UNREACHABLE
    if _is_tls_error(exc):
        return Cause.EOF if _is_a(exc, "ssl", "SSLEOFError") else Cause.PROTOCOL
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
    """The POSIX errno name of ``exc`` (``ECONNRESET``); None when it carries none.

    getaddrinfo and OpenSSL codes are not errnos (SSL error 1 is not EPERM).
    """
    if exc is None:  # most verdicts: no OS call failed (two type checks less each)
        return None
    if _is_name_resolution_error(exc) or _is_tls_error(exc):
        return None
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno_code_name(exc.errno)
    return None


def connect_failure(exc: BaseException | None, *, during_tls: bool = False) -> tuple[Cause, str]:
    """Cause and explanation for a connection that was never made, from what the attempt raised.

    A host name that cannot even be encoded (IDNA: an empty or over-long label)
    fails like one that does not resolve: UNREACHABLE. Whatever ends the TLS
    handshake (an alert, or the peer aborting the connection because of one) is a
    TLS failure: PROTOCOL, and the explanation says it happened in the handshake.
    """
    if exc is None:
        return Cause.UNREACHABLE, "no address to connect to"
    why = explain_os_error(exc)
    if during_tls:
        if not _is_tls_error(exc):
            why = f"the TLS handshake failed: {why}"
        return Cause.PROTOCOL, why
    if isinstance(exc, OSError):
        return classify_os_error(exc) or Cause.UNREACHABLE, why
    return Cause.UNREACHABLE, why


def explain_os_error(exc: BaseException) -> str:
    """A phrase saying what failed, for a verdict's detail: the layer first, then the OS words."""
    if isinstance(exc, UnicodeError):
        return f"name resolution failed: not a valid host name ({exc})"
    if _is_name_resolution_error(exc):
        words = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"name resolution failed: {words}"
    if _is_a(exc, "ssl", "SSLCertVerificationError"):
        reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
        return f"TLS certificate verification failed: {reason}"
    if _is_tls_error(exc):
        reason = getattr(exc, "reason", None) or exc
        return f"TLS handshake or record failed: {reason} ({exc})"
    if isinstance(exc, ConnectionResetError) and not str(exc):
        return "the peer reset the connection"
    return str(exc) or type(exc).__name__


#: TCP_INFO's millisecond counters are kept in jiffies (1 to 10 ms): an ACK that came at
#: the very start of a silence (the ACK of a TLS ClientHello, say) can read as up to one
#: jiffy older than the silence itself.
KERNEL_CLOCK_SLACK = 0.010


def hung_or_silent(info: TcpInfo | None, silent_for: float) -> Cause:
    """Tell a hung peer (kernel acks, app mute) from a silent one (nothing acks).

    The peer's kernel acknowledges our bytes even when its application is
    frozen. HUNG needs that evidence: an ACK received during the silence and no
    retransmission pending. Two ways the kernel shows it:

    - an idle line: our pings went out and were acknowledged (no backoff);
    - data in flight to a stopped reader: its receive buffer is full, its kernel
      advertises a zero window and answers our window probes (RFC 9293 3.8.6.1).
      The probe timer backs off (``backoff`` grows) with nothing unacknowledged
      (``unacked`` 0, the bytes wait unsent), and each answer is an ACK. An
      unanswered probe is counted in ``probes``; on loopback the answer can
      arrive before the kernel counts its probe, so one is still an answered one.

    "Nothing outstanding" alone is not evidence: it also holds when we sent
    nothing. Without TCP_INFO (non-Linux) we cannot tell, and say SILENT.
    """
    if info is None:
        return Cause.SILENT
    acked_during_silence = info.last_ack_recv_ms / 1000.0 < silent_for + KERNEL_CLOCK_SLACK
    if not acked_during_silence or info.retransmits != 0:
        return Cause.SILENT
    if info.backoff == 0:
        return Cause.HUNG
    window_probes_answered = info.unacked == 0 and info.probes <= 1
    return Cause.HUNG if window_probes_answered else Cause.SILENT


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
    #: wall-clock time (time.time domain) of the decision, from the maker's clock: this
    #: module reads none; 0.0 when the maker did not say
    detected_wall: float = 0.0

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


def errno_code_name(code: int) -> str:
    """The POSIX name of an errno number (``ECONNRESET``), or the number itself if unnamed.

    For callers that hold a bare number (``SO_ERROR``, a poll loop) rather than an
    exception; ``errno_name`` is the one for exceptions.
    """
    return errno.errorcode.get(code, str(code))
