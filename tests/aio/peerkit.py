"""Peers in real processes for the asyncio tests (the ``spawn`` fixture is in conftest)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

PEERPROC = Path(__file__).with_name("peerproc.py")


class Peer:
    """A peerproc.py process; ``port`` is set for server modes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(PEERPROC), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = 0

    def read_line(self, timeout: float = 20.0) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"peer printed nothing within {timeout} s")
        return self.proc.stdout.readline().strip()

    def wait_listening(self) -> Peer:
        line = self.read_line()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])
        return self

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
