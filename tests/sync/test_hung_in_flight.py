"""A stopped peer is HUNG, not SILENT, also while our data is flowing to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peerwatch import Cause, sync

pytestmark = pytest.mark.timeout(60)
PEERPROC = Path(__file__).parent.parent / "aio" / "peerproc.py"


def test_a_stopped_receiver_with_data_in_flight_is_hung() -> None:
    """SIGSTOPped echo peer, 16 MiB queued to it: its kernel answers our zero-window probes."""
    proc = subprocess.Popen(
        [sys.executable, str(PEERPROC), "echo", "--interval", "0.2", "--timeout", "1.0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        conn = sync.connect("127.0.0.1", port, interval=0.2, timeout=1.0)
        conn.send(b"warm", timeout=5)
        assert conn.recv(timeout=5) == b"warm"
        os.kill(proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        for _ in range(256):  # more than both kernels' buffers hold
            conn.enqueue(b"x" * 65536, timeout=5)
        verdict = conn.wait_closed(timeout=10)
        took = time.monotonic() - stopped
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert verdict.cause is Cause.HUNG, verdict.describe()
    assert took < 1.0 + 1.5
    info = verdict.tcp_info
    if info is not None:  # the evidence: window probes backing off, every sent byte acked
        assert info.backoff > 0 and info.unacked == 0 and info.retransmits == 0
        assert info.notsent_bytes is None or info.notsent_bytes > 0
    assert len(verdict.undelivered) >= 200  # and what it never took is handed back
