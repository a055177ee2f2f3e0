"""Another process's socket descriptors, borrowed through pidfd (Linux >= 5.6).

``pidfd_open`` names a process without the pid-reuse race, ``pidfd_getfd``
duplicates one of its descriptors into this process: the copy shares the open
file, so a socket option set through it applies to the owner's socket, which
is how ``peerwatch guard --pid`` protects a program that cannot be restarted.
The kernel allows it under the rules of ``ptrace`` attach (same user and Yama
``ptrace_scope`` 0 or 1 for a descendant, or CAP_SYS_PTRACE). Python has
``os.pidfd_open`` but no ``pidfd_getfd``, hence the raw ``syscall`` through
ctypes.

Every refusal becomes ``RemedyRefused`` with the reason a person can act on;
a descriptor that the owner closed meanwhile is simply not there (``None``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Iterator

from peerwatch.errors import RemedyRefused

__all__ = ["ProcessHandle", "open_process"]

#: pidfd_getfd in the unified syscall table (x86_64, i386, arm, arm64, riscv, ppc, s390).
SYS_PIDFD_GETFD = 438

_PTRACE_HINT = (
    "it needs ptrace access: run as the same user with kernel.yama.ptrace_scope 0, "
    "or as root (CAP_SYS_PTRACE)"
)


class ProcessHandle:
    """A pidfd on a running process; close it (or use ``with``) when done."""

    def __init__(self, pid: int, pidfd: int, proc: str = "/proc") -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._proc = proc

    def __enter__(self) -> ProcessHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def socket_fds(self) -> list[tuple[int, int]]:
        """(descriptor number, socket inode) of every socket the process holds, by number."""
        fd_dir = f"{self._proc}/{self.pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except PermissionError:
            raise RemedyRefused(
                f"not allowed to see the descriptors of process {self.pid}: {_PTRACE_HINT}"
            ) from None
        except FileNotFoundError:
            raise RemedyRefused(f"process {self.pid} has exited") from None
        found: list[tuple[int, int]] = []
        for name in names:
            with contextlib.suppress(OSError):  # closed while we looked
                target = os.readlink(f"{fd_dir}/{name}")
                if target.startswith("socket:["):
                    found.append((int(name), int(target[8:-1])))
        return sorted(found)

    @contextlib.contextmanager
    def borrow(self, fd: int) -> Iterator[int | None]:
        """This process's duplicate of the target's descriptor ``fd``, closed after the block.

        None when the target closed ``fd`` meanwhile. Raises ``RemedyRefused``
        when the kernel refuses (permission, no pidfd_getfd, process gone).
        """
        dup = _pidfd_getfd(self._pidfd, fd, self.pid)
        try:
            yield dup
        finally:
            if dup is not None:
                os.close(dup)


def open_process(pid: int) -> ProcessHandle:
    """A handle on process ``pid``; raises ``RemedyRefused`` when there is none or no pidfd."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        raise RemedyRefused("this platform has no pidfd_open (Linux >= 5.3 is needed)")
    try:
        pidfd: int = pidfd_open(pid)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            raise RemedyRefused(f"no process with pid {pid}") from None
        if exc.errno == errno.ENOSYS:
            raise RemedyRefused("this kernel has no pidfd_open (Linux >= 5.3 is needed)") from None
        raise RemedyRefused(f"pidfd_open({pid}) failed: {exc.strerror}") from exc
    return ProcessHandle(pid, pidfd)


_libc: ctypes.CDLL | None = None


def _pidfd_getfd(pidfd: int, fd: int, pid: int) -> int | None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    result = int(_libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0))
    if result >= 0:
        return result
    err = ctypes.get_errno()
    if err == errno.EBADF:  # the target closed it meanwhile
        return None
    if err in (errno.EPERM, errno.EACCES):
        raise RemedyRefused(f"not allowed to take descriptors of process {pid}: {_PTRACE_HINT}")
    if err == errno.ENOSYS:
        raise RemedyRefused("this kernel has no pidfd_getfd (Linux >= 5.6 is needed)")
    if err == errno.ESRCH:
        raise RemedyRefused(f"process {pid} has exited")
    raise RemedyRefused(f"pidfd_getfd(pid {pid}, fd {fd}) failed: {os.strerror(err)}")
