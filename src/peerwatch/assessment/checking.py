"""``check(sock)``: may a pool hand out this connection? The kernel's answer, in microseconds.

A pool that pre-pings (``SELECT 1``, ``PING``) pays a round trip on every
checkout, and the ping itself hangs on the very dead socket it tests. Yet the
kernel often already knows the connection is over or doomed:

- the server closed it (PostgreSQL ``idle_session_timeout``, Redis ``timeout``,
  nginx ``keepalive_timeout``, a restart): a FIN arrived, state CLOSE_WAIT;
- it was reset or the kernel gave up (RST, ETIMEDOUT): state CLOSE;
- data or keepalive probes went unanswered: ``retransmits``/``probes`` counters;
- the server stopped reading: its advertised window (``snd_wnd``) is zero.

One ``getsockopt(TCP_INFO)``, nothing sent, nothing read, no error consumed:
the owning driver sees no difference. The rules are a pool's subset of
``peerwatch.assess`` (which also reads queues and keepalive settings, and
weighs durations): a pooled connection must be ESTABLISHED and quiet, so
anything else is reason enough to replace it. What it cannot see: a peer that
died a moment ago without a packet since (keepalive and ``TCP_USER_TIMEOUT``,
``peerwatch.guard``, bound that), or a server application that hangs.

(The module is not called ``check`` so that the package can export the
function ``peerwatch.check`` without a submodule of that name shadowing it.)
"""

from __future__ import annotations

import _socket
import errno
import socket
import struct

from peerwatch.assessment.model import Finding
from peerwatch.kernel.borrowing import SocketRef, borrow_raw, descriptor_of
from peerwatch.kernel.tcpinfo import FIELD_OFFSET, TCP_INFO_OPT, TcpState

__all__ = ["Checked", "check"]

# state, ca_state, retransmits, probes (the first four bytes) and snd_wnd, in one unpack;
# _HEAD alone for kernels whose TCP_INFO ends before snd_wnd (Linux < 5.4)
_HEAD = struct.Struct("=BBBB")
_HEAD_AND_WINDOW = struct.Struct(f"=BBBB{FIELD_OFFSET['snd_wnd'] - 4}xI")
_SND_WND_END = _HEAD_AND_WINDOW.size
#: Unanswered retransmissions of the head segment (each after a doubled RTO, so at least
#: 0.6 s) or unanswered keepalive / zero-window probes that make a connection doomed.
#: One alone may be a segment still in flight on a slow path; two are not.
UNANSWERED = 2
_ESTABLISHED = TcpState.ESTABLISHED.value
#: What getsockopt(TCP_INFO) fails with where there is no TCP_INFO to read.
_NO_TCP_INFO = frozenset({errno.EOPNOTSUPP, errno.ENOPROTOOPT, errno.EINVAL})


class Checked:
    """The answer: ``dead`` (replace the connection), the ``finding`` and a one-line ``reason``."""

    __slots__ = ("dead", "finding", "reason")

    def __init__(self, dead: bool, finding: Finding, reason: str) -> None:
        self.dead = dead
        self.finding = finding
        self.reason = reason

    def __repr__(self) -> str:
        return f"Checked(dead={self.dead}, finding={self.finding.value}, reason={self.reason!r})"


#: The answer for a healthy connection, shared (no allocation on the fast path).
USABLE = Checked(False, Finding.OK, "established, nothing unanswered")


def check(sock: SocketRef) -> Checked:
    """Whether a pooled TCP connection is already dead or doomed, from TCP_INFO alone.

    ``sock`` is a socket object, anything with ``fileno()`` (a psycopg
    connection) or a descriptor; nothing on it changes. Linux only: elsewhere
    (no TCP_INFO) every open socket is reported usable, as a pool without the
    check would assume.
    """
    if isinstance(sock, socket.socket):
        return _check_socket(sock)
    fd = descriptor_of(sock)
    if fd < 0:
        return Checked(True, Finding.CLOSED, "the socket was closed by this process")
    try:  # family/type/proto given: no getsockopt calls to detect them
        view = borrow_raw(fd)
    except OSError as exc:
        return Checked(True, Finding.CLOSED, f"descriptor {fd} is not a socket: {exc}")
    try:
        return _check_socket(view)
    finally:
        view.detach()  # the descriptor belongs to the caller


def _check_socket(sock: _socket.socket) -> Checked:
    try:  # only the bytes up to snd_wnd: the kernel copies less
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO_OPT, _SND_WND_END)
    except OSError as exc:
        if sock.fileno() < 0:
            return Checked(True, Finding.CLOSED, "the socket was closed by this process")
        if exc.errno in _NO_TCP_INFO:
            return USABLE
        return Checked(True, Finding.CLOSED, f"the socket cannot be read: {exc}")
    if len(raw) >= _SND_WND_END:
        state, _ca_state, retransmits, probes, window = _HEAD_AND_WINDOW.unpack_from(raw)
    else:
        (state, _ca_state, retransmits, probes), window = _HEAD.unpack_from(raw), None
    if state != _ESTABLISHED:
        return _not_established(TcpState.of(state))
    if retransmits >= UNANSWERED:
        return Checked(
            True,
            Finding.NOT_ACKNOWLEDGING,
            f"data unacknowledged after {retransmits} retransmissions: the server is unreachable",
        )
    if probes >= UNANSWERED:
        return Checked(
            True,
            Finding.PROBES_UNANSWERED,
            f"{probes} keepalive or zero-window probes unanswered: the server is unreachable",
        )
    if window == 0:
        return Checked(
            True,
            Finding.PEER_NOT_READING,
            "the server advertises a zero window: it reads nothing, a request would stall",
        )
    return USABLE


def _not_established(state: TcpState) -> Checked:
    if state is TcpState.CLOSE_WAIT:
        return Checked(True, Finding.PEER_CLOSED, "the server closed the connection (FIN received)")
    if state is TcpState.CLOSE:
        return Checked(
            True, Finding.CLOSED, "the connection was reset or timed out (TCP state CLOSE)"
        )
    if state in (TcpState.SYN_SENT, TcpState.SYN_RECV):
        return Checked(True, Finding.CONNECTING, f"not connected yet ({state.name})")
    if state is TcpState.LISTEN:
        return Checked(True, Finding.LISTENING, "a listening socket, not a connection")
    return Checked(True, Finding.CLOSING, f"the connection is closing ({state.name})")
