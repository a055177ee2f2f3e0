"""TCP states of both hosts, read from their kernels with sock_diag, as they change.

The report shows states the kernel reported, never states the lab assumed:
a thread dumps every TCP socket of each host namespace through a NETLINK
sock_diag socket (pyroute2's DiagSocket, opened inside the namespace) a few
times a second and records each change of state per connection, and when a
connection disappears from the kernel. That is how the half-open scenario
shows the server in FIN_WAIT2 until tcp_fin_timeout and then nothing, while
the client still sits in CLOSE_WAIT.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from peerwatch.kernel.tcpinfo import TcpState
from peerwatch.lab.hosts import HOSTS, Lab
from peerwatch.lab.netns import NETNS_DIR

GONE = "gone"


@dataclass
class Timeline:
    """State changes of one connection as seen from one host: [(monotonic time, state)]."""

    host: str
    local_port: int
    remote_port: int
    changes: list[tuple[float, str]] = field(default_factory=list)

    def add(self, when: float, state: str) -> None:
        if not self.changes or self.changes[-1][1] != state:
            self.changes.append((when, state))

    @property
    def names(self) -> list[str]:
        return [state for _, state in self.changes]


CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def inside_netns(name: str) -> Iterator[None]:
    """Move the calling thread (only it) into network namespace ``name`` for the block.

    Sockets created inside stay bound to that namespace after the thread
    leaves. setns(2) with CLONE_NEWNET is per thread and allowed in a
    multi-threaded process; it needs no fork, unlike pyroute2's own netns=
    support, which forks a helper from the watcher thread (and so inherits
    our signal handlers) every time a socket is opened.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({name}): {os.strerror(err)}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - cannot happen
                err = ctypes.get_errno()
                raise OSError(err, f"setns back: {os.strerror(err)}")
    finally:
        os.close(home)


def _open_diag(netns: str) -> Any:
    """A sock_diag socket (pyroute2's DiagSocket) bound inside ``netns``."""
    from pyroute2.netlink.diag import DiagSocket

    with inside_netns(netns):
        diag = DiagSocket()
        diag.bind()
    return diag


class StateWatcher:
    """Polls both hosts' TCP sockets on ``ports`` until stopped. Use as a context manager."""

    def __init__(self, lab: Lab, ports: Iterable[int], period: float = 0.1) -> None:
        self.lab = lab
        self.ports = frozenset(ports)
        self.period = period
        self.timelines: dict[tuple[str, int, int], Timeline] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"states-{lab.tag}", daemon=True)

    def __enter__(self) -> StateWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        from pyroute2.netlink.diag import SS_ALL

        sockets: dict[str, tuple[int, Any]] = {}  # role -> (generation, diag socket)
        try:
            while not self._stop.is_set():
                for host in HOSTS:
                    generation = self.lab.generation[host.role]
                    held = sockets.get(host.role)
                    if held is None or held[0] != generation:
                        if held is not None:
                            with contextlib.suppress(Exception):
                                held[1].close()
                        try:
                            sockets[host.role] = (generation, _open_diag(self.lab.netns(host)))
                        except Exception as exc:
                            self._error(f"{host.role}: open: {exc}")
                            sockets.pop(host.role, None)
                            continue
                    try:
                        dump = sockets[host.role][1].get_sock_stats(
                            family=socket.AF_INET, states=SS_ALL
                        )
                    except Exception as exc:
                        self._error(f"{host.role}: dump: {exc}")
                        sockets.pop(host.role, None)
                        continue
                    self._record(host.role, dump, time.monotonic())
                self._stop.wait(self.period)
        finally:
            for _, diag in sockets.values():
                with contextlib.suppress(Exception):
                    diag.close()

    def _error(self, text: str) -> None:
        with self._lock:
            if len(self.errors) < 20:
                self.errors.append(text)

    def _record(self, role: str, dump: Iterable[Any], now: float) -> None:
        present = set()
        with self._lock:
            for msg in dump:
                state = TcpState.of(int(msg["idiag_state"]))
                if state is TcpState.LISTEN:
                    continue
                local, remote = int(msg["idiag_sport"]), int(msg["idiag_dport"])
                if local not in self.ports and remote not in self.ports:
                    continue
                key = (role, local, remote)
                present.add(key)
                timeline = self.timelines.get(key)
                if timeline is None:
                    timeline = self.timelines[key] = Timeline(role, local, remote)
                timeline.add(now, state.name)
            for key, timeline in self.timelines.items():
                if key[0] == role and key not in present:
                    timeline.add(now, GONE)

    def for_port(self, port: int) -> dict[str, list[Timeline]]:
        """Timelines of the connections to server port ``port``, by host role."""
        out: dict[str, list[Timeline]] = {host.role: [] for host in HOSTS}
        with self._lock:
            for (role, local, remote), timeline in self.timelines.items():
                if (role == "kodos" and local == port) or (role == "kang" and remote == port):
                    out[role].append(timeline)
        return out
