"""The child-process kit, on real processes: children die with their parent, JSON lines flow."""

from __future__ import annotations

import contextlib
import io
import os
import queue
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from peerwatch.childproc import file_tail, start_json_reader

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")

#: The middle process starts a grandchild that asks to die with it, reports the
#: grandchild's pid, and waits to be killed: SIGKILL leaves it no chance to clean up.
MIDDLE = textwrap.dedent(
    """
    import os, subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())],
                                  stdout=subprocess.PIPE)
    assert grandchild.stdout.readline() == b"armed\\n"
    print(grandchild.pid, flush=True)
    time.sleep(60)
    """
)
GRANDCHILD = textwrap.dedent(
    """
    import signal, sys, time
    from peerwatch.childproc import die_with_parent
    alive = die_with_parent(signal.SIGKILL, int(sys.argv[1]))
    print("armed" if alive else "orphan", flush=True)
    time.sleep(60)
    """
)


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def middle() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", MIDDLE, GRANDCHILD], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the grandchild too, if the test failed
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@linux_only
def test_a_child_dies_when_its_parent_is_killed_with_sigkill(
    middle: subprocess.Popen[bytes],
) -> None:
    assert middle.stdout is not None
    grandchild = int(middle.stdout.readline())
    assert not gone(grandchild)
    middle.kill()  # no clean-up runs in the parent: only the kernel can end the grandchild
    middle.wait(timeout=10)
    deadline = time.monotonic() + 5.0
    while not gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone(grandchild)


def test_a_child_whose_parent_is_already_gone_is_told_so() -> None:
    """The parent pid it was given is not its parent any more: the kernel will never signal."""
    result = subprocess.run(
        [sys.executable, "-c", GRANDCHILD.replace("time.sleep(60)", ""), str(os.getpid() + 1)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.stdout == b"orphan\n"


def test_a_child_writing_to_a_parent_that_stopped_listening_exits_quietly() -> None:
    """A BrokenPipeError traceback on stderr would only bury the child's real last words."""
    writer = textwrap.dedent(
        """
        from peerwatch.childproc import write_json_line
        for n in range(100_000):
            write_json_line({"n": n, "not json": {1, 2}})
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b'{"n": 0, "not json": "{1, 2}"}')
    proc.stdout.close()
    assert proc.wait(timeout=30) == 0
    assert proc.stderr.read() == b""
    proc.stderr.close()


def test_the_reader_sorts_records_from_text_and_ends_once() -> None:
    lines = '{"ev": "ready"}\nTraceback (most recent call last):\n[1, 2]\n{"ev": "done", "n": 2}\n'
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.stdout.write({lines!r})"], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    got: queue.Queue[tuple[str, Any]] = queue.Queue()
    reader = start_json_reader(
        proc.stdout,
        lambda record: got.put(("record", record)),
        lambda: got.put(("end", None)),
        on_text=lambda text: got.put(("text", text)),
    )
    reader.join(timeout=30)
    proc.wait(timeout=10)
    proc.stdout.close()
    assert [got.get_nowait() for _ in range(got.qsize())] == [
        ("record", {"ev": "ready"}),
        ("text", "Traceback (most recent call last):"),
        ("text", "[1, 2]"),
        ("record", {"ev": "done", "n": 2}),
        ("end", None),
    ]


def test_file_tail_keeps_the_end_and_survives_a_closed_file() -> None:
    stderr = io.BytesIO(b"x" * 5000 + "ValueError: ünknown\n".encode())
    assert file_tail(stderr, 20) == "ValueError: ünknown\n"[-19:]
    stderr.close()
    assert file_tail(stderr) == ""
