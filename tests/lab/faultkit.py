"""What the fault tests share: a kang -- middlebox -- kodos path with one event loop per host.

``lab_path`` builds fresh namespaces for one test and removes them (and every
loop, socket and nft table in them) whatever happens; it skips without root.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from peerwatch.lab.hosts import KANG, KODOS
from peerwatch.lab.middlefaults import FaultyPath, faulty_path
from peerwatch.lab.netns import can_create_namespaces
from peerwatch.lab.nsloop import NamespaceLoop
from peerwatch.lab.settings import QUICK

#: Heartbeat settings of every connection in these tests (the quick lab's).
INTERVAL = QUICK.interval
TIMEOUT = QUICK.timeout
#: The port the servers on kodos listen on.
PORT = 7400


@dataclass
class LabPath:
    path: FaultyPath
    client: NamespaceLoop  # runs in kang
    server: NamespaceLoop  # runs in kodos


def need_root() -> None:
    able, why = can_create_namespaces()
    if not able:
        pytest.skip(f"needs root (CAP_NET_ADMIN) and iproute2/nftables: {why}")


def lab_path() -> Iterator[LabPath]:
    """Generator for a fixture: the path and both loops, torn down in reverse order."""
    need_root()
    with (
        faulty_path(QUICK.timers) as path,
        NamespaceLoop(path.lab.netns(KODOS)) as server,
        NamespaceLoop(path.lab.netns(KANG)) as client,
    ):
        yield LabPath(path, client, server)
