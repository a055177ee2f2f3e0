"""The public names resolve, and ``import peerwatch`` stays light."""

from __future__ import annotations

import subprocess
import sys

import peerwatch


def test_every_public_name_resolves() -> None:
    missing = [name for name in peerwatch.__all__ if getattr(peerwatch, name, None) is None]
    assert missing == []
    assert callable(peerwatch.guard) and callable(peerwatch.assess)  # functions, not modules


def test_import_loads_no_event_loop_and_no_extras() -> None:
    code = "import sys, peerwatch; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert not loaded & {"asyncio", "rich", "pyroute2", "matplotlib", "prometheus_client"}
