"""``assess(sock)``: ALIVE, SUSPECT or DEAD for any TCP connection, with a cause and the evidence.

(The module is not called ``assess`` so that the package can export the
function ``peerwatch.assess`` without a submodule of that name shadowing it.)

This module reads the figures (TCP_INFO, queues, keepalive settings) from a
live socket and hands them to the pure rules in ``peerwatch.assessment.rules``;
``peerwatch inspect`` does the same from netlink sock_diag records, which
have a ``facts()`` method, so ``assess()`` takes those too.

assess() only reads: it never takes SO_ERROR (that would consume the error
the owning library is about to receive) and never sends anything.
"""

from __future__ import annotations

import socket
from typing import Protocol

from peerwatch.assessment.model import (
    Assessment,
    AssessPolicy,
    Finding,
    SocketFacts,
    Status,
    Timer,
)
from peerwatch.assessment.rules import assess_info
from peerwatch.errors import ConfigError
from peerwatch.kernel.borrowing import SocketRef, borrow, descriptor_of
from peerwatch.kernel.tcpinfo import TcpState, tcp_info

__all__ = [
    "AssessPolicy",
    "Assessment",
    "Finding",
    "SocketFacts",
    "Status",
    "Timer",
    "assess",
    "assess_info",
    "socket_facts",
]


class _HasFacts(Protocol):
    def facts(self) -> SocketFacts: ...


def assess(
    target: SocketRef | SocketFacts | _HasFacts,
    policy: AssessPolicy | None = None,
) -> Assessment:
    """Assess a live socket (object, anything with fileno(), or descriptor) or a sock_diag record.

    Read-only: the socket's owner sees no difference. A socket object already
    closed by this process is DEAD with cause CLOSED.
    """
    if isinstance(target, SocketFacts):
        return assess_info(target, policy)
    facts_method = getattr(target, "facts", None)
    if callable(facts_method):
        facts = facts_method()
        if not isinstance(facts, SocketFacts):
            raise TypeError(f"{type(target).__name__}.facts() did not return SocketFacts")
        return assess_info(facts, policy)
    fd = descriptor_of(target)  # type: ignore[arg-type]
    if fd < 0:
        return Assessment(Status.DEAD, Finding.CLOSED, "the socket was closed by this process", ())
    return assess_info(socket_facts(fd), policy)


def socket_facts(fd: int) -> SocketFacts:
    """Gather SocketFacts from a descriptor without changing anything on it."""
    from peerwatch.kernel.knobs import TCP_KEEPCNT, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_USER_TIMEOUT

    try:
        view = borrow(fd)  # never socket.socket(fileno=fd): see borrowing
    except OSError as exc:
        raise ConfigError(f"assess() needs a TCP socket; descriptor {fd} is not a socket") from exc
    try:
        if view.type != socket.SOCK_STREAM or view.family not in (
            socket.AF_INET,
            socket.AF_INET6,
        ):
            raise ConfigError(f"assess() needs a TCP socket; descriptor {fd} is not one")
        info = tcp_info(fd)

        def opt(level: int, name: int | None) -> int | None:
            if name is None:
                return None
            try:
                return view.getsockopt(level, name)
            except OSError:
                return None

        keepalive = opt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        return SocketFacts(
            state=info.state if info is not None else TcpState.UNKNOWN,
            info=info,
            recv_queue=_ioctl_int(fd, "FIONREAD"),  # SIOCINQ
            send_queue=_ioctl_int(fd, "TIOCOUTQ"),  # SIOCOUTQ
            keepalive=None if keepalive is None else bool(keepalive),
            keepalive_idle=opt(socket.IPPROTO_TCP, TCP_KEEPIDLE),
            keepalive_interval=opt(socket.IPPROTO_TCP, TCP_KEEPINTVL),
            keepalive_count=opt(socket.IPPROTO_TCP, TCP_KEEPCNT),
            user_timeout_ms=opt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT),
        )
    finally:
        view.detach()  # the descriptor belongs to the caller


def _ioctl_int(fd: int, request_name: str) -> int | None:
    """SIOCINQ / SIOCOUTQ (same numbers as FIONREAD / TIOCOUTQ on Linux); None if refused."""
    try:
        import array
        import fcntl
        import termios
    except ImportError:  # Windows
        return None
    request = getattr(termios, request_name, None)
    if request is None:
        return None
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(fd, request, buf, True)
    except OSError:  # a listening socket refuses both (EINVAL)
        return None
    return int(buf[0])
