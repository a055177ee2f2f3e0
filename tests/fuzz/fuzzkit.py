"""The fuzz suite's kit: a server in a child process, its canary, the checks, a raw peer.

Every test ends with ``Target.check()``: the canary kept echoing with bounded
latency and got no verdict, the server's RSS stayed within ``RSS_GROWTH`` of
where it started, and its log holds no traceback and no line longer than
``LONGEST_LINE``.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from serveproc import Proc  # the child-process kit of the server tests

from peerwatch.core.decoder import Decoder
from peerwatch.core.frames import Frame

FUZZPROC = Path(__file__).with_name("fuzzproc.py")
KINDS = ("aio", "sync")
#: An echo round trip of the canary may take this long (2 shared cores under CI load;
#: the 1-byte-frame stall of issue 8 item 6 held the loop for ~10 s).
CANARY_LATENCY = 1.0
#: How far the server's RSS may grow over the baseline taken after its warm-up.
RSS_GROWTH = 64 << 20
#: A log line longer than this is a peer flooding our log (the 1 MiB GOODBYE reason).
LONGEST_LINE = 4096


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (VmRSS of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class Target:
    """A fuzzproc server of ``kind`` with a canary connection echoing through it."""

    def __init__(self, kind: str, *args: str) -> None:
        self.kind = kind
        self.server = Proc([sys.executable, str(FUZZPROC), kind, *args])
        self.canary: Proc | None = None
        try:
            self.port = int(self.server.wait_for(r"^PORT (\d+)")[1])
            self.canary = Proc([sys.executable, str(FUZZPROC), "canary", "--port", str(self.port)])
            self.canary.wait_for(r"^ROUND 10 ")  # connected and warm
        except BaseException:
            self.stop()
            raise
        self.baseline = rss(self.server.proc.pid)
        self.rounds_checked = 0

    def rss_growth(self) -> int:
        return rss(self.server.proc.pid) - self.baseline

    def ended(self, port: int, timeout: float = 5.0) -> str:
        """The server handler's ``END`` line for the peer whose local port was ``port``."""
        return self.server.wait_for(rf"^END peer={port} .*", timeout=timeout)[0]

    def check(self) -> None:
        """The canary still echoes promptly, RSS is bounded, the log is clean."""
        canary = self.canary
        assert canary is not None
        # the canary goes on: a round it had not done when this check began completes
        last = self.rounds_checked
        rounds = [line for line in canary.out if line.startswith("ROUND ")]
        canary.wait_for(rf"^ROUND {len(rounds) + 1} ", timeout=5.0)
        lines = list(canary.out)
        assert not [line for line in lines if line.split()[0] not in ("READY", "ROUND")], lines
        rounds = [line for line in lines if line.startswith("ROUND ")]
        latencies = [float(line.split()[2]) for line in rounds[last:]]
        self.rounds_checked = len(rounds)  # a failure is reported once, not by every later test
        growth = self.rss_growth()
        print(f"[{self.kind}] canary: {len(latencies)} echoes, slowest {max(latencies):.4f} s;"
              f" server RSS +{growth / (1 << 20):.1f} MiB")  # fmt: skip
        assert max(latencies) < CANARY_LATENCY, f"canary echo took {max(latencies):.3f} s"
        assert growth < RSS_GROWTH, f"server RSS grew by {growth >> 20} MiB"
        log = list(self.server.err)
        assert not [line for line in log if "Traceback" in line], "\n".join(log[-40:])
        assert max((len(line) for line in log), default=0) <= LONGEST_LINE
        assert self.server.proc.poll() is None, "the server died"

    def stop(self) -> None:
        for proc in (self.canary, self.server):
            if proc is not None:
                proc.kill()


class Hostile:
    """A raw TCP peer that speaks bytes, not peerwatch: what the server does is read back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        self.local_port: int = self.sock.getsockname()[1]
        self.decoder = Decoder(64 << 20)
        self.frames: list[Frame] = []
        self.closed = False

    def send(self, data: bytes) -> bool:
        """Send ``data``; False if the server closed on us meanwhile."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def read_until(self, done: object = None, wait: float = 5.0) -> list[Frame]:
        """Frames until the server closes (or ``done(frames)`` is true), at most ``wait`` s."""
        deadline = time.monotonic() + wait
        while not self.closed and time.monotonic() < deadline:
            if callable(done) and done(self.frames):
                break
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                break
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                break
            self.frames += self.decoder.feed(data)  # the server's bytes must always decode
        return self.frames

    def finish(self, wait: float = 5.0) -> list[Frame]:
        """Half-close and read until the server closes: every stream must end in a verdict."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.read_until(wait=wait)
        assert self.closed, f"the server kept the connection open {wait} s after our FIN"
        return self.frames

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Hostile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
