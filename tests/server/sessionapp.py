"""A session handler for ``serve --handler sessionapp:logged_echo`` (tests/server on PYTHONPATH).

It echoes every message and writes down, in ``$PEERWATCH_TEST_SESSION_LOG/<pid>.log``,
each message the application took (``took``) and each echo once the session
accepted it (``echoed``: the store kept it before it can go out). The lines are
written with ``os.write`` on an O_APPEND descriptor, no user-space buffer, so a
SIGKILLed worker leaves every line it wrote: the test counts what each worker's
application saw.
"""

from __future__ import annotations

import os

from peerwatch import ResumableConnection

LOG_DIR = "PEERWATCH_TEST_SESSION_LOG"


async def logged_echo(session: ResumableConnection) -> None:
    path = os.path.join(os.environ[LOG_DIR], f"{os.getpid()}.log")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        async for message in session:
            os.write(fd, b"took " + message + b"\n")
            await session.enqueue(b"echo " + message)
            os.write(fd, b"echoed " + message + b"\n")
    finally:
        os.close(fd)


def read_logs(directory: str, pids: list[int]) -> dict[int, list[tuple[str, bytes]]]:
    """Each worker's lines, in the order it wrote them: ``(what, message)``."""
    logs: dict[int, list[tuple[str, bytes]]] = {}
    for pid in pids:
        path = os.path.join(directory, f"{pid}.log")
        if os.path.exists(path):
            with open(path, "rb") as lines:
                logs[pid] = [
                    (what.decode(), message)
                    for what, _, message in (line.rstrip(b"\n").partition(b" ") for line in lines)
                ]
    return logs
