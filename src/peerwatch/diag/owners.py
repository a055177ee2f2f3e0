"""Which process holds a socket: a map from socket inode to (pid, command), read from /proc.

sock_diag gives each socket's inode; ``/proc/PID/fd/N`` links read
``socket:[INODE]``. Scanning every process's descriptors is what ``ss -p``
does too. Processes of other users are only visible to root; a socket whose
holder cannot be seen (or that no process holds, like TIME_WAIT) has no owner.
Processes come and go during the scan: vanished ones are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Owner", "socket_owners"]


@dataclass(frozen=True)
class Owner:
    pid: int
    command: str  # /proc/PID/comm: the first 15 characters of the executable's name

    def __str__(self) -> str:
        return f"{self.command}[{self.pid}]"


def socket_owners(proc: str = "/proc") -> dict[int, list[Owner]]:
    """inode -> every process holding a descriptor to that socket (shared after fork)."""
    owners: dict[int, list[Owner]] = {}
    try:
        pids = [int(name) for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return owners
    for pid in pids:
        inodes = _socket_inodes(f"{proc}/{pid}/fd")
        if not inodes:
            continue
        owner = Owner(pid, _command(f"{proc}/{pid}/comm"))
        for inode in inodes:
            holders = owners.setdefault(inode, [])
            if owner not in holders:
                holders.append(owner)
    return owners


def _socket_inodes(fd_dir: str) -> set[int]:
    inodes: set[int] = set()
    try:
        names = os.listdir(fd_dir)
    except OSError:  # gone, or not ours to see
        return inodes
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _command(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"
