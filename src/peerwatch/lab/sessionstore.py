"""The shared session store of the lab: a real redis-server that outlives kodos's reboots.

A session survives its server's host only if its books live elsewhere. The
lab has two hosts, and the store must be neither: the client's books are not
the server's, and kodos's power cycle wipes kodos. So Redis runs on the
switch's own network stack, at ``STORE`` on the lab LAN, like a store host
plugged into the same switch. How Redis is started is known in one place
(``peerwatch.testing.servers.start_redis``); the resumable server reaches it
through ``peerwatch.server.sessions`` as ``serve --session-store`` would.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile

from peerwatch.lab.hosts import PREFIX_LEN, Lab
from peerwatch.lab.netns import LabError, run
from peerwatch.testing import servers as real

#: The store's address on the lab LAN (on the switch's bridge) and port.
STORE = "10.0.0.3"
STORE_PORT = 6379
STORE_URL = f"redis://{STORE}:{STORE_PORT}/0"


def store_missing() -> str | None:
    """Why the shared-store scenario cannot run here (None: it can)."""
    import importlib.util

    if shutil.which("redis-server") is None:
        return "redis-server is not installed (tools/system-deps.sh installs it)"
    if importlib.util.find_spec("redis") is None:
        return "redis-py is missing: pip install 'peerwatch[sessions]'"
    return None


def start_store(lab: Lab) -> real.Server:
    """Start redis-server in the switch's namespace at ``STORE``.

    The lab's teardown kills it with the namespace; ``stop()`` on the result also
    removes its directory.
    """
    run(["ip", "-n", lab.switch, "addr", "add", f"{STORE}/{PREFIX_LEN}", "dev", "br0"])
    workdir = tempfile.mkdtemp(prefix="pwlab-store-")

    def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.switch, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        lab.registry.add_process(proc)
        return proc

    # The server agent waits for it (the store answers before any session is opened):
    # not from here, which is outside the switch's namespace.
    at = real.Where(STORE, STORE_PORT, workdir, spawn, wait=False)
    try:
        return real.start_redis(at)
    except real.ServerUnavailable as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise LabError(f"the session store: {exc}") from exc
