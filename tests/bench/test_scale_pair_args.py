"""``python -m bench.scale_pair``: what a user can type wrong ends in a one-line usage
error naming the problem, never a traceback, and before any server is started."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["peerwach"], "invalid choice: 'peerwach'"),
        (["minimal ping/pong floor"], "invalid choice"),  # the floor is the other side
        (["peerwatch", "--rounds", "0"], "--rounds between 1 and 20"),
        (["peerwatch", "--connections", "ten"], "invalid int value: 'ten'"),
        (["peerwatch", "--connections", "1000000"], "do not fit here"),
    ],
)
def test_a_wrong_argument_is_a_usage_error(args: list[str], says: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale_pair", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
