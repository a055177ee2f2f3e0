"""Directories a supervisor owns for its life, and the removal of those whose owner died.

A supervisor killed with SIGKILL cannot remove its metrics directory. So each
one holds an exclusive ``flock`` on a lock file inside its directory for as
long as it lives; the kernel drops the lock when the process dies, however it
dies (no pid file whose pid the next process may reuse). The next supervisor
to start removes every directory of that kind whose lock it can take.

The lock file is locked under a temporary name and then renamed into place, so
a directory whose lock file exists always has (or had) a locked owner: a
directory being created, or from a version without locks, has none and is left
alone. Only the current user's directories are looked at, and symlinks never.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat

#: Name of the lock file inside an owned directory.
OWNER_LOCK = ".owner.lock"


def claim(directory: str) -> int:
    """Lock ``directory`` for this process's life; returns the descriptor to keep open."""
    pending = os.path.join(directory, OWNER_LOCK + ".pending")
    fd = os.open(pending, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"%d\n" % os.getpid())  # for a human reading the directory
        os.rename(pending, os.path.join(directory, OWNER_LOCK))
    except BaseException:
        os.close(fd)
        raise
    return fd


def release(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def remove_abandoned(parent: str, prefix: str) -> list[str]:
    """Remove the directories ``parent/prefix*`` whose owner is gone; returns their paths."""
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(prefix):
            continue
        path = os.path.join(parent, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        if _owner_gone(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _owner_gone(directory: str) -> bool:
    try:
        fd = os.open(os.path.join(directory, OWNER_LOCK), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False  # no lock file: being created, or not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # its owner holds the lock: alive
    finally:
        os.close(fd)
    return True
