"""What a poll flag, an errno or a TCP state means, in the words of the articles."""

from __future__ import annotations

import errno
import select

from peerwatch.core.verdicts import errno_code_name
from peerwatch.kernel.tcpinfo import TcpState

__all__ = ["ERRNO_MEANING", "STATE_MEANING", "errno_text", "poll_flags"]

POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000)

_POLL_NAMES: tuple[tuple[int, str], ...] = (
    (select.POLLIN, "POLLIN"),
    (select.POLLPRI, "POLLPRI"),
    (select.POLLOUT, "POLLOUT"),
    (POLLRDHUP, "POLLRDHUP"),
    (select.POLLERR, "POLLERR"),
    (select.POLLHUP, "POLLHUP"),
    (select.POLLNVAL, "POLLNVAL"),
)

ERRNO_MEANING: dict[int, str] = {
    errno.ECONNRESET: "the peer answered with RST: it has no such connection "
    "(process crashed with unread data, host rebooted, or it aborted)",
    errno.ETIMEDOUT: "the kernel gave up: data or keepalive probes went unacknowledged "
    "too long (peer host down, or the path to it cut)",
    errno.EPIPE: "the connection cannot send any more: the peer reset it (Linux reports an "
    "RST received in CLOSE_WAIT as EPIPE, not ECONNRESET), or this side shut down its sending "
    "side",
    errno.ECONNREFUSED: "the host answered our SYN with RST: nothing listens on that port",
    errno.EHOSTUNREACH: "no route to the host (ICMP host unreachable)",
    errno.ENETUNREACH: "no route to the network (ICMP network unreachable)",
    errno.ECONNABORTED: "the connection was aborted by this host",
    errno.EADDRINUSE: "the address is in use (another socket holds it; SO_REUSEADDR only "
    "helps against TIME_WAIT)",
    errno.ENOTCONN: "the socket is not connected",
}

STATE_MEANING: dict[TcpState, str] = {
    TcpState.ESTABLISHED: "connection established",
    TcpState.SYN_SENT: "our SYN sent, waiting for the peer's SYN-ACK",
    TcpState.SYN_RECV: "SYN received, our SYN-ACK sent",
    TcpState.FIN_WAIT1: "our FIN sent, not yet acknowledged",
    TcpState.FIN_WAIT2: "our FIN acknowledged; the peer has not closed its side yet",
    TcpState.TIME_WAIT: "both sides closed; the kernel lingers to absorb late segments",
    TcpState.CLOSE: "the connection is over: reset, timed out, or fully closed",
    TcpState.CLOSE_WAIT: "the peer closed its sending side (FIN received); ours is still open",
    TcpState.LAST_ACK: "we closed after the peer did; waiting for the ACK of our FIN",
    TcpState.CLOSING: "both sides sent FIN at the same time",
    TcpState.LISTEN: "listening",
}


def poll_flags(revents: int) -> list[str]:
    """Names of the flags set in a poll() ``revents`` (unknown bits as hex)."""
    names = [name for bit, name in _POLL_NAMES if revents & bit]
    rest = revents & ~sum(bit for bit, _ in _POLL_NAMES)
    if rest:
        names.append(hex(rest))
    return names


def errno_text(err: int | None) -> tuple[str, str]:
    """(symbolic name, meaning) of an errno, e.g. ("ECONNRESET", "the peer answered ...")."""
    if err is None:
        return "?", "unknown error"
    return errno_code_name(err), ERRNO_MEANING.get(err, "")
