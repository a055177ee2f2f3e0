"""A SIGKILLed supervisor's metrics directory is removed by the next supervisor to start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from serveproc import Served, pid_gone

from peerwatch.server.leftovers import OWNER_LOCK, claim, release, remove_abandoned

pytestmark = pytest.mark.timeout(60)
PREFIX = "peerwatch-metrics-"


def _directories(parent: Path) -> set[Path]:
    return set(parent.glob(PREFIX + "*"))


def test_the_next_supervisor_removes_what_a_killed_one_left(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # this test's directories only
    alive = serve("--workers", "1", "--metrics-port", "0", env=env)
    (kept,) = _directories(tmp_path)
    killed = serve("--workers", "1", "--metrics-port", "0", env=env)
    (left,) = _directories(tmp_path) - {kept}
    killed.signal(signal.SIGKILL)  # no chance to clean up after itself
    assert all(pid_gone(pid, timeout=10) for pid in killed.pids)
    assert left.is_dir()  # the leak, as it was
    after = serve("--workers", "1", "--metrics-port", "0", env=env)
    remaining = _directories(tmp_path)
    assert left not in remaining  # its owner is dead: removed
    assert kept in remaining  # its owner is alive: untouched, and still scraped
    assert len(remaining) == 2
    assert "peerwatch_workers" in alive.scrape() and "peerwatch_workers" in after.scrape()


def test_only_directories_whose_owner_died_are_removed(tmp_path: Path) -> None:
    mine = tmp_path / (PREFIX + "mine")
    mine.mkdir()
    held = claim(str(mine))
    unlocked = tmp_path / (PREFIX + "no-lock")  # being created, or from an older version
    unlocked.mkdir()
    other = tmp_path / "unrelated"
    other.mkdir()
    dead = tmp_path / (PREFIX + "dead")
    dead.mkdir()
    code = (
        "import os, signal, sys\n"
        "from peerwatch.server.leftovers import claim\n"
        "claim(sys.argv[1])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(dead)], check=False, timeout=30)
    assert (dead / OWNER_LOCK).exists()
    try:
        assert remove_abandoned(str(tmp_path), PREFIX) == [str(dead)]
        assert mine.is_dir() and unlocked.is_dir() and other.is_dir() and not dead.exists()
    finally:
        release(held)
    assert remove_abandoned(str(tmp_path), PREFIX) == [str(mine)]  # released: now abandoned
