"""A host in its own network namespace that can be blackholed (used by the ``netns_host`` fixture).

``netns_host`` builds a namespace named ``pwdiag-<random>`` joined to this one by
a veth pair on a random /30 of 10.213.0.0/16. Traffic goes only to that host.
``blackhole()`` installs an nftables table inside the namespace that drops every
packet in and out: from here, the host has vanished without a FIN or RST, like
a server whose power was cut. Every process started in the namespace is killed
and the namespace deleted (which deletes the veth pair) in the finalizer, even
when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

import pytest


def run(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True, timeout=10)


def netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (tools/system-deps.sh installs it)"
    return None


BLACKHOLE_RULES = """
table inet pwdiag_blackhole {
  chain input { type filter hook input priority -300; policy drop; }
  chain output { type filter hook output priority -300; policy drop; }
}
"""


@dataclass
class NetnsHost:
    """A host in a namespace of its own, reachable at ``addr`` from this namespace."""

    name: str
    addr: str
    local_addr: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)  # servers' directories, removed at close

    def spawn(self, *argv: str, **kwargs: object) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the namespace; it is killed when the fixture ends."""
        # a session of its own, so the finalizer can kill forked children too (socat fork)
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", self.name, *argv], start_new_session=True, **kwargs
        )
        self.processes.append(proc)
        return proc

    def exec(self, *argv: str, stdin: str | None = None) -> None:
        run("ip", "netns", "exec", self.name, *argv, stdin=stdin)

    def wait_listening(self, port: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((self.addr, port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def start_redis(self, port: int = 6379) -> subprocess.Popen[bytes]:
        """Redis (peerwatch.testing.servers) inside the namespace, listening on ``addr``."""
        from peerwatch.testing.servers import ServerUnavailable, Where, start_redis

        def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
            return self.spawn(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        try:
            server = start_redis(Where(self.addr, port, spawn=spawn))
        except ServerUnavailable as exc:
            pytest.skip(str(exc))
        self.directories.append(server.directory)
        assert server.proc is not None
        return server.proc

    def blackhole(self) -> None:
        """Drop every packet to and from the host: it vanishes without FIN or RST."""
        self.exec("nft", "-f", "-", stdin=BLACKHOLE_RULES)

    def restore(self) -> None:
        self.exec("nft", "delete", "table", "inet", "pwdiag_blackhole")

    def close(self) -> None:
        for proc in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group: the process and its children
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for directory in self.directories:
            shutil.rmtree(directory, ignore_errors=True)
        subprocess.run(
            ["ip", "netns", "del", self.name], check=False, capture_output=True, timeout=10
        )


def free_subnet() -> tuple[str, str]:
    """A /30 of 10.213.0.0/16 no interface here already uses: (our address, the host's)."""
    used = subprocess.run(
        ["ip", "-4", "-o", "addr"], check=False, capture_output=True, text=True, timeout=10
    ).stdout
    for _ in range(20):
        third, fourth = random.randrange(256), random.randrange(0, 256, 4)
        prefix = f"10.213.{third}."
        if f"{prefix}{fourth + 1}/" not in used and f"{prefix}{fourth + 2}/" not in used:
            return f"{prefix}{fourth + 1}", f"{prefix}{fourth + 2}"
    raise RuntimeError("no free /30 in 10.213.0.0/16")
