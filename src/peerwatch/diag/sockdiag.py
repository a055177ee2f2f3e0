"""Every TCP socket of this network namespace, read through netlink sock_diag.

One ``SOCK_DIAG_BY_FAMILY`` dump per address family (pyroute2's DiagSocket)
returns, for each socket, what ``ss -tinoe`` prints: state, addresses, the
queues, the pending timer with its expiry and retransmission count, the owning
uid and inode, and the kernel's ``struct tcp_info``. The tcp_info attribute is
handed to ``peerwatch.tcpinfo.parse_tcp_info``, the parser the rest of the
project uses, so a field means the same thing here as on a live socket.

sock_diag only sees the network namespace of the calling process: to inspect
a namespace, run inside it (``ip netns exec NS peerwatch inspect``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from peerwatch.assessment import SocketFacts, Timer
from peerwatch.tcpinfo import TcpInfo, TcpState, parse_tcp_info

__all__ = ["SockRecord", "read_sockets"]

# include/uapi/linux/inet_diag.h: extension numbers; the request asks with bit (n - 1)
INET_DIAG_INFO = 2
INET_DIAG_CONG = 4
_EXTENSIONS = (1 << (INET_DIAG_INFO - 1)) | (1 << (INET_DIAG_CONG - 1))
_ALL_STATES = (1 << 13) - 1  # TCP_ESTABLISHED .. TCP_NEW_SYN_RECV
_NLA_HEADER = 4


@dataclass(frozen=True)
class SockRecord:
    """One socket as sock_diag reports it; ``facts()`` feeds it to ``assess``."""

    family: int
    state: TcpState
    local: tuple[str, int]
    remote: tuple[str, int]
    inode: int  # 0 for sockets no process holds (TIME_WAIT, orphans, SYN_RECV)
    uid: int
    recv_queue: int  # LISTEN: connections waiting to be accepted
    send_queue: int  # LISTEN: the backlog
    timer: Timer
    timer_expires_ms: int
    timer_retrans: int
    info: TcpInfo | None
    shutdown: int | None = None  # bit 0: peer closed its side (FIN in), bit 1: ours (FIN out)
    congestion: str | None = None

    def facts(self) -> SocketFacts:
        return SocketFacts(
            state=self.state,
            info=self.info,
            recv_queue=self.recv_queue,
            send_queue=self.send_queue,
            timer=self.timer,
            timer_expires_ms=self.timer_expires_ms,
            timer_retrans=self.timer_retrans,
        )

    @property
    def local_text(self) -> str:
        return _endpoint(self.family, self.local)

    @property
    def remote_text(self) -> str:
        return _endpoint(self.family, self.remote)

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state.name,
            "local": self.local_text,
            "remote": self.remote_text,
            "inode": self.inode,
            "uid": self.uid,
            "recv_queue": self.recv_queue,
            "send_queue": self.send_queue,
            "timer": self.timer.label,
            "timer_expires_ms": self.timer_expires_ms,
            "timer_retrans": self.timer_retrans,
            "shutdown": self.shutdown,
            "congestion": self.congestion,
            "tcp_info": None if self.info is None else self.info.as_dict(),
        }


def _endpoint(family: int, addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def read_sockets(
    families: Iterable[int] = (socket.AF_INET, socket.AF_INET6),
) -> list[SockRecord]:
    """Dump every TCP socket of this network namespace (all states).

    Raises ``OSError`` when netlink sock_diag is refused (no such kernel
    support, or a sandbox without netlink).
    """
    from pyroute2 import DiagSocket

    records: list[SockRecord] = []
    with DiagSocket() as diag:
        diag.bind()
        for family in families:
            messages = diag.get_sock_stats(
                family=family, states=_ALL_STATES, extensions=_EXTENSIONS
            )
            records.extend(_record(family, msg) for msg in messages)
    return records


def _record(family: int, msg: Any) -> SockRecord:
    return SockRecord(
        family=family,
        state=TcpState.of(int(msg["idiag_state"])),
        local=(str(msg["idiag_src"]), int(msg["idiag_sport"])),
        remote=(str(msg["idiag_dst"]), int(msg["idiag_dport"])),
        inode=int(msg["idiag_inode"]),
        uid=int(msg["idiag_uid"]),
        recv_queue=int(msg["idiag_rqueue"]),
        send_queue=int(msg["idiag_wqueue"]),
        timer=_timer(int(msg["idiag_timer"])),
        timer_expires_ms=int(msg["idiag_expires"]),
        timer_retrans=int(msg["idiag_retrans"]),
        info=_tcp_info(msg.get_attr("INET_DIAG_INFO")),
        shutdown=msg.get_attr("INET_DIAG_SHUTDOWN"),
        congestion=msg.get_attr("INET_DIAG_CONG"),
    )


def _timer(value: int) -> Timer:
    try:
        return Timer(value)
    except ValueError:  # a timer kind newer than this code: say nothing about it
        return Timer.NONE


def _tcp_info(attr: Any) -> TcpInfo | None:
    """The raw ``struct tcp_info`` bytes of the attribute, parsed by peerwatch's own parser.

    pyroute2 decodes the attribute itself, but against a fixed, older layout;
    the raw payload (after the 4-byte attribute header) is what the kernel sent.
    """
    if attr is None:
        return None
    try:
        start = int(attr.offset) + _NLA_HEADER
        raw = bytes(attr.data[start : int(attr.offset) + int(attr.length)])
        return parse_tcp_info(raw)
    except (AttributeError, TypeError, ValueError):  # layout of pyroute2 changed, or truncated
        return None
