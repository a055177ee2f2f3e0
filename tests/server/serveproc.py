"""``peerwatch serve`` and ``peerwatch ping`` as real processes, read line by line, reaped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence

READY = re.compile(
    r"listening on (?P<host>\S+):(?P<port>\d+), \d+ worker\(s\) \(pids (?P<pids>[\d ]+)\)"
    r" on (?P<loop>\S+),"
)
METRICS = re.compile(r"metrics on http://(?P<host>[^:]+):(?P<port>\d+)/metrics")


class Proc:
    """A child process whose stdout and stderr are collected by threads (no pipe ever fills)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # a signal to the test's group never reaches it
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _drain(self, stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(
        self, pattern: str, *, stream: str = "out", timeout: float = 20.0
    ) -> re.Match[str]:
        """The first line of ``stream`` matching ``pattern``, waiting up to ``timeout`` s."""
        regex = re.compile(pattern)
        lines = self.out if stream == "out" else self.err
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in lines:
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._alive_readers()):
                    raise AssertionError(
                        f"no line matching {pattern!r} in {stream} of {self.argv[3:]}:\n"
                        + "\n".join([*self.out, "--- stderr ---", *self.err])
                    )
                self._changed.wait(min(left, 0.1))

    async def line(
        self, pattern: str, *, stream: str = "out", timeout: float = 20.0
    ) -> re.Match[str]:
        """``wait_for`` for async tests: the wait runs in a thread, so the test's own loop keeps
        answering its connections' pings (blocking it for a slow child start once cost every
        client of a 1 s-timeout server its connection)."""
        return await asyncio.to_thread(self.wait_for, pattern, stream=stream, timeout=timeout)

    def _alive_readers(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(2.0)
        return code

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.wait(10.0)


class Served(Proc):
    """``peerwatch serve`` started with ``--port 0`` unless told otherwise; ready when returned."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        argv = [sys.executable, "-m", "peerwatch", "serve", *args]
        if "--port" not in args:
            argv += ["--port", "0"]
        super().__init__(argv, env)
        self.args = args
        self.host = ""
        self.port = 0
        self.pids: list[int] = []
        self.loop = ""
        self.metrics_port: int | None = None

    def ready(self) -> Served:
        """Wait for the line saying every worker listens; fill in port, pids, loop, metrics."""
        ready = self.wait_for(READY.pattern)
        self.host = ready["host"]
        self.port = int(ready["port"])
        self.pids = [int(pid) for pid in ready["pids"].split()]
        self.loop = ready["loop"]
        if "--metrics-port" in self.args:
            self.metrics_port = int(self.wait_for(METRICS.pattern)["port"])
        return self

    def scrape(self) -> dict[str, float]:
        """``/metrics`` as {'name{labels}': value} (comments and *_created dropped)."""
        assert self.metrics_port is not None
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                if not name.endswith("_created") and "_created{" not in name:
                    samples[name] = float(value)
        return samples

    async def metrics(self) -> dict[str, float]:
        """``scrape`` for async tests, off the test's loop (see ``Proc.line``)."""
        return await asyncio.to_thread(self.scrape)

    def kill(self) -> None:
        """Stop gracefully if possible (the supervisor then removes its metrics directory)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)
                self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(8.0)
        super().kill()
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)


def ping(*args: str) -> Proc:
    return Proc([sys.executable, "-m", "peerwatch", "ping", *args])


def pid_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` no longer exists (or is a zombie of a process we do not own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.05)
    return False


def established_by_pid(pid: int, port: int) -> int:
    """Server-side ESTABLISHED connections on ``port`` held by process ``pid``."""
    import psutil

    return sum(
        1
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


def time_wait_on(port: int) -> int:
    """Sockets in TIME_WAIT whose local port is ``port`` (from /proc/net/tcp{,6})."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "06":  # TCP_TIME_WAIT
                    count += 1
    return count
