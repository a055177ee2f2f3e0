"""The TCP sockets of another process, seen through descriptors borrowed with ``pidfd``.

``peerwatch guard --pid`` sets options on them and ``inspect --idle-limit``
reads their keepalive and user-timeout settings, which sock_diag does not
report. Each socket is looked at through a duplicate of the owner's descriptor
that lives only for one step, so nothing is held open behind the owner's back.
The sockets are read through the descriptor, not looked up in this network
namespace, so a process in a container's namespace works too.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from peerwatch.kernel.borrowing import borrow
from peerwatch.kernel.pidfd import ProcessHandle
from peerwatch.kernel.tcpinfo import TcpState, tcp_info

__all__ = ["ForeignSocket", "tcp_sockets"]

_IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)


@dataclass(frozen=True)
class ForeignSocket:
    """One TCP socket of another process, as its descriptor shows it."""

    pid: int
    fd: int  # the descriptor number in the owning process
    inode: int
    family: int
    state: TcpState
    local: tuple[str, int]
    remote: tuple[str, int] | None  # None: not connected (listening, closed)

    @property
    def local_text(self) -> str:
        return _endpoint(self.family, self.local)

    @property
    def remote_text(self) -> str:
        return "*" if self.remote is None else _endpoint(self.family, self.remote)

    def as_dict(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "fd": self.fd,
            "inode": self.inode,
            "state": self.state.name,
            "local": self.local_text,
            "remote": self.remote_text,
        }


def tcp_sockets(
    process: ProcessHandle, keep: Callable[[ForeignSocket], bool] = lambda s: True
) -> Iterator[tuple[ForeignSocket, int]]:
    """(socket, a borrowed descriptor of it) for each TCP socket of ``process`` that ``keep``
    accepts; the borrowed descriptor is closed when the iteration moves on.

    Raises ``RemedyRefused`` (from ``pidfd``) when the kernel refuses.
    """
    for fd, inode in process.socket_fds():
        with process.borrow(fd) as dup:
            if dup is None:
                continue
            found = _describe(process.pid, fd, inode, dup)
            if found is not None and keep(found):
                yield found, dup


def _describe(pid: int, fd: int, inode: int, dup: int) -> ForeignSocket | None:
    view = borrow(dup)  # the duplicate shares the owner's open file, O_NONBLOCK included
    try:
        if view.family not in (socket.AF_INET, socket.AF_INET6) or view.type != socket.SOCK_STREAM:
            return None
        if view.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) not in (
            socket.IPPROTO_TCP,
            _IPPROTO_MPTCP,
        ):
            return None
        info = tcp_info(dup)
        try:
            remote: tuple[str, int] | None = view.getpeername()[:2]
        except OSError:  # ENOTCONN: listening or closed
            remote = None
        return ForeignSocket(
            pid=pid,
            fd=fd,
            inode=inode,
            family=view.family,
            state=TcpState.UNKNOWN if info is None else info.state,
            local=view.getsockname()[:2],
            remote=remote,
        )
    finally:
        view.detach()  # ``dup`` is closed by the caller


def _endpoint(family: int, addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
