"""Child processes for the benchmarks: spawn, talk to, measure, and always kill.

Every benchmark role (a server, a load generator, a flock of peers) runs in its
own process so that the process being measured owns one core and nothing else
runs in it. A child speaks one JSON object per stdout line (``{"event": ...}``)
and takes one command per stdin line. Three fences bound its life: the parent
kills it in ``Child.stop()`` (called from ``finally``/context managers), the
kernel kills it when the parent dies (``peerwatch.childproc.die_with_parent``),
and ``SIGALRM`` kills it after ``max_seconds`` whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import platform
import queue
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

from peerwatch.childproc import die_with_parent, file_tail, start_json_reader, write_json_line

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

#: Every benchmark process gets the same, fixed glibc mmap threshold. asyncio reads
#: with ``recv(256 KiB)``; glibc serves that from mmap (then mremap and munmap: three
#: system calls per read) until a large free raises its *dynamic* threshold, after
#: which it comes from the heap. Which of the two a server process is in depends on
#: its history, and it doubled the idle floor's CPU in some runs and not others.
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": str(4 * 1024 * 1024)}
#: The pid of the benchmark that started a child, so the child can tell if it already died.
PARENT_ENV = "PEERWATCH_BENCH_PARENT"


def child_setup(max_seconds: float, parent: int | None = None) -> None:
    """Call first thing in every benchmark child: die with the parent, and on a deadline.

    ``parent``: the pid of the process that forked this one (``os.getpid()`` read
    before ``os.fork()``). Without it the parent is the benchmark that started this
    process with ``Child`` (its pid is in the environment), which is right for a
    ``python -m`` child and wrong for a child forked by one: that child's parent is
    the forking process, and it would take itself for an orphan and exit at once.
    """
    if parent is None:
        parent = int(os.environ.get(PARENT_ENV, os.getppid()))
    if not die_with_parent(signal.SIGKILL, parent):
        os._exit(1)  # the parent died before we asked the kernel to follow it
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # default action: terminate
    signal.alarm(max(1, int(max_seconds)))
    raise_nofile()


def raise_nofile(wanted: int = 65536) -> int:
    """Lift RLIMIT_NOFILE so one process can hold 10,000+ sockets; returns the soft limit.

    Root may raise the hard limit up to fs.nr_open; others get the current hard limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in ((wanted, max(wanted, hard)), (min(wanted, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, target)
            return target[0]
        except (ValueError, OSError):
            continue
    return soft


def emit(event: str, **fields: Any) -> None:
    """Child side: report one event to the parent as a JSON line."""
    write_json_line({"event": event, **fields})


class ChildFailed(RuntimeError):
    """A benchmark child exited, timed out, or said something unexpected."""


class Child:
    """A benchmark process started with ``python -m <module> args...``.

    Its stdout is drained by a thread as it comes and its stderr goes to a file,
    so a child never blocks on a full pipe while the parent is busy elsewhere
    (a blocked observer would make its verdicts late, and the benchmark wrong).
    """

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        *,
        cpu: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``env``: variables added to the child's environment (``PYTHONPATH`` of another build)."""
        self.argv = [sys.executable, "-m", module, *args]
        self.label = " ".join([module, *args])
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, **CHILD_ENV, PARENT_ENV: str(os.getpid()), **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        self.pid = self.proc.pid
        if cpu is not None:
            pin(self.pid, cpu)
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        assert self.proc.stdout is not None
        self._reader = start_json_reader(
            self.proc.stdout,
            self._events.put,
            lambda: self._events.put(None),  # end of output: the child exited
            # not one of our events: a program's own output
            on_text=lambda line: self._events.put({"event": "text", "line": line.rstrip()}),
            name=f"bench-{module}",
        )
        self._ended = False

    def read_event(self, timeout: float, expect: str | None = None) -> dict[str, Any]:
        """Next JSON event (of kind ``expect``, skipping others) within ``timeout`` s.

        A line of output that is not JSON is an event of kind ``text`` (``line``).
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._ended:
                raise ChildFailed(f"{self.label} exited: {self.stderr_tail()}")
            try:
                event = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ChildFailed(f"{self.label}: no {expect or 'event'} in {timeout} s") from None
            if event is None:
                self._ended = True
                continue
            if expect is None or event.get("event") == expect:
                return event
            if event.get("event") == "error":
                raise ChildFailed(f"{self.label}: {event}")

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def ask(self, line: str, expect: str, timeout: float = 30.0) -> dict[str, Any]:
        self.command(line)
        return self.read_event(timeout, expect)

    def stderr_tail(self, limit: int = 2000) -> str:
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=2)
        return file_tail(self._stderr, limit)

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps the process."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()
        self._reader.join(timeout=2)
        self._stderr.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def children(*kids: Child) -> Iterator[tuple[Child, ...]]:
    try:
        yield kids
    finally:
        for kid in reversed(kids):
            kid.stop()


def pin(pid: int, cpu: int) -> None:
    """Pin a process to one CPU when the machine has it (keeps server and load apart)."""
    with contextlib.suppress(OSError):
        if cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(pid, {cpu})


def cpu_seconds(pid: int) -> float:
    """CPU time of a process (all its live threads), in seconds, to the nanosecond.

    ``/proc/PID/task/*/schedstat`` counts nanoseconds on the CPU; ``/proc/PID/stat``
    counts 10 ms clock ticks, too coarse for an idle server measured over seconds.
    The stat ticks are the fallback where schedstat is missing.
    """
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with (
                contextlib.suppress(FileNotFoundError),
                open(f"/proc/{pid}/task/{task}/schedstat") as f,
            ):
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return cpu_ticks_seconds(pid)
    return total / 1e9


def runqueue_wait_seconds(pid: int) -> float:
    """Time the process's threads were runnable but waiting for a CPU (schedstat field 2).

    A process that is late although it used little CPU was either blocked or, if
    this grows, pushed off the CPU by other work on the machine.
    """
    total = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with (
                contextlib.suppress(FileNotFoundError),
                open(f"/proc/{pid}/task/{task}/schedstat") as f,
            ):
                total += int(f.read().split()[1])
    return total / 1e9


def cpu_ticks_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads), from /proc/PID/stat (10 ms ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # after the ")" the fields start at field 3 (state); utime is field 14, stime 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    """Resident set size in KiB, from /proc/PID/status (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ChildFailed(f"no VmRSS for {pid}")


def system_busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle since boot (from /proc/stat)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


class CpuWindow:
    """CPU seconds per wall second of a set of processes over a measured window.

    ``other`` is what the rest of the machine used meanwhile (all CPUs busy time
    minus the measured processes): other work on a shared machine, plus kernel
    softirq time not charged to any process. A high value flags a disturbed run.
    """

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.other = 0.0
        self.used: list[float] = []
        self.wall = 0.0
        self.start_wall = time.monotonic()
        self.start_busy = system_busy_seconds()
        self.start_cpu = [cpu_seconds(pid) for pid in pids]
        self.start_wait = [runqueue_wait_seconds(pid) for pid in pids]
        self.waited: list[float] = []

    def stop(self) -> list[float]:
        used = [
            cpu_seconds(pid) - start for pid, start in zip(self.pids, self.start_cpu, strict=True)
        ]
        self.waited = [
            runqueue_wait_seconds(pid) - start
            for pid, start in zip(self.pids, self.start_wait, strict=True)
        ]
        busy = system_busy_seconds() - self.start_busy
        wall = time.monotonic() - self.start_wall
        self.other = max(0.0, busy - sum(used)) / wall
        self.used = used
        self.wall = wall
        return [value / wall for value in used]


def machine_description() -> dict[str, str]:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        mem_kib = int(meminfo.readline().split()[1])
    versions = {}
    for name in ("websockets", "uvloop"):
        with contextlib.suppress(Exception):
            versions[name] = __import__(name).__version__
    return {
        "cpu": f"{os.cpu_count()} x {model}",
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
    }
