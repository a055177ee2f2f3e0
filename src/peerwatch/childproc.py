"""The one kit for the child processes peerwatch starts: lab agents, server workers, bench roles.

Every child must die with whoever started it, even when that parent is killed
with SIGKILL and runs no clean-up: a lab agent left behind keeps a namespace
busy, an orphaned server worker keeps serving, a benchmark role keeps a core.
``die_with_parent`` asks the kernel for that (``PR_SET_PDEATHSIG``, Linux) and
closes the race in which the parent died before the request took effect.

Lab agents and benchmark roles talk to their parent in JSON lines: one object
per stdout line, one command per stdin line. ``write_json_line`` is the child's
side and ``start_json_reader`` the parent's; ``file_tail`` shows the end of a
child's stderr file when it failed. (Server workers are ``multiprocessing``
processes and talk through its pipe instead.)
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

__all__ = ["die_with_parent", "file_tail", "start_json_reader", "write_json_line"]

#: prctl(2) option: the signal the kernel sends this process when its parent exits.
PR_SET_PDEATHSIG = 1

_write_lock = threading.Lock()


def die_with_parent(signum: signal.Signals, parent: int) -> bool:
    """Have the kernel send ``signum`` to this process when ``parent`` exits; False if it has.

    Call it first thing in the child, with the parent's pid as the parent knew it
    (``os.getpid()`` there, passed down) or as ``os.getppid()`` read at start-up.
    The request only covers a parent alive when it is made: if ``parent`` is
    already gone (the child was re-parented), nobody will send the signal, so a
    False return means "exit now". On platforms without prctl the parent is
    only checked, and a caller may poll ``os.getppid()`` as the worker does.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    return os.getppid() == parent


def write_json_line(record: dict[str, Any], stream: IO[str] | None = None) -> None:
    """Child side: write ``record`` as one JSON line and flush it; safe from any thread.

    A parent that closed its end has stopped listening: the child exits quietly
    (status 0) instead of printing a BrokenPipeError traceback nobody reads.
    Values JSON cannot encode are written as ``str()``.
    """
    out = sys.stdout if stream is None else stream
    line = json.dumps(record, default=str) + "\n"
    with _write_lock:
        try:
            out.write(line)
            out.flush()
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
            os._exit(0)


def start_json_reader(
    stream: IO[bytes],
    on_record: Callable[[dict[str, Any]], None],
    on_end: Callable[[], None],
    *,
    on_text: Callable[[str], None] | None = None,
    name: str = "json-reader",
) -> threading.Thread:
    """Parent side: a daemon thread handing each JSON object line of ``stream`` to ``on_record``.

    The thread drains the pipe as the child writes, so a child never blocks on a
    full pipe while the parent is busy elsewhere (a blocked agent would look like
    a hung peer). Lines that are not a JSON object go to ``on_text`` (decoded,
    newline stripped) or are dropped. ``on_end`` runs exactly once, when the
    child closed its stdout (it exited) or the parent closed the pipe.
    """

    def read() -> None:
        try:
            for line in stream:
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if isinstance(record, dict):
                    on_record(record)
                elif on_text is not None:
                    on_text(line.decode(errors="replace").rstrip("\r\n"))
        except (OSError, ValueError):
            pass  # the pipe was closed by the parent's teardown
        finally:
            on_end()

    thread = threading.Thread(target=read, name=name, daemon=True)
    thread.start()
    return thread


def file_tail(file: IO[bytes], size: int = 2000) -> str:
    """The last ``size`` bytes of a child's stderr file, decoded (its traceback, usually).

    stderr goes to a temporary file, never a pipe: nobody reads a pipe while a
    scenario or benchmark runs, and a child blocked on a full one looks hung.
    """
    try:
        file.seek(0, os.SEEK_END)
        end = file.tell()
        file.seek(max(0, end - size))
        return file.read().decode(errors="replace")
    except (OSError, ValueError):  # closed already
        return ""
