"""Programs stuck on a connection (child processes running blocked_client.py), for the remedies.

``Stuck(host)`` connects a child process to ``host.addr:port`` and waits;
``go("send")`` or ``go("idle")`` lets it block in recv; ``outcome()`` is the
line it printed when that recv ended. ``close()`` kills it (fixtures call it
in their ``finally``).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from diag_netns import NetnsHost

CLIENT = str(Path(__file__).with_name("blocked_client.py"))


class Stuck:
    """A child process blocked in recv on its connection to ``host``."""

    def __init__(self, host: NetnsHost, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, CLIENT, host.addr, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        word, local_port = self.proc.stdout.readline().split()
        assert word == "connected"
        self.port = int(local_port)  # this end's port: what a filter selects it by

    @property
    def pid(self) -> int:
        return self.proc.pid

    def go(self, how: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(how + "\n")
        self.proc.stdin.flush()

    def outcome(self, timeout: float) -> str:
        """The line the child printed when its recv ended (raises on timeout)."""
        self.proc.wait(timeout=timeout)
        assert self.proc.stdout is not None
        return self.proc.stdout.read().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)


def end_orphans(addr: str) -> None:
    """SOCK_DESTROY what killed children left to ``addr`` (FIN_WAIT1 orphans retransmitting
    to a blackholed host for minutes), so a test leaves no socket behind."""
    from peerwatch.diag.netlink import destroy_tcp
    from peerwatch.diag.sockdiag import read_sockets

    for record in read_sockets():
        if record.remote[0] == addr and record.sockid:
            with contextlib.suppress(OSError):
                destroy_tcp(record.family, record.sockid)


@contextlib.contextmanager
def two_stuck(host: NetnsHost, port: int, step: str) -> Iterator[tuple[Stuck, Stuck]]:
    """Two programs connected to Redis on ``host``, blackholed, then each at ``step``."""
    host.start_redis(port)
    stuck: list[Stuck] = []
    try:
        stuck = [Stuck(host, port), Stuck(host, port)]
        host.blackhole()
        for child in stuck:
            child.go(step)
        yield stuck[0], stuck[1]
    finally:
        for child in stuck:
            child.close()
        end_orphans(host.addr)
