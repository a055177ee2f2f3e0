"""``peerwatch inspect`` in a real terminal: tmux at 80 columns, read back with capture-pane.

The sockets are this test's own (a private loopback address); the terminal is a
real pty whose width the program must discover itself (no COLUMNS), as at 3 a.m.
on an operator's laptop. What must hold: the verdict and the why of every row are
on screen, nothing is wider than the terminal, and no address is cut.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bad_states import close_wait_pair, pair, private_loopback

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sock_diag is Linux"),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed (system-deps)"),
]

WIDTH, HEIGHT = 80, 40
VERDICT = re.compile(r"^(ALIVE|SUSPECT|DEAD)\s")


class Tmux:
    """One private tmux server (its own socket), killed after the test."""

    def __init__(self, tmp: Path) -> None:
        self.argv = ["tmux", "-S", str(tmp / "tmux.sock"), "-f", "/dev/null"]

    def run(self, *args: str) -> str:
        return subprocess.run(
            [*self.argv, *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout

    def start(self, command: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        env["TERM"] = "xterm-256color"
        shell = " ".join(_quote(a) for a in command) + "; sleep 30"
        subprocess.run(
            [*self.argv, "new-session", "-d", "-x", str(WIDTH), "-y", str(HEIGHT), shell],
            env=env, capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip

    def screen(self) -> list[str]:
        return self.run("capture-pane", "-p").splitlines()

    def wait_for(self, pattern: str, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen()
            if any(re.search(pattern, line) for line in lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on screen:\n" + "\n".join(lines))
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run([*self.argv, "kill-server"], capture_output=True, timeout=10, check=False)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    terminal = Tmux(tmp_path)
    try:
        yield terminal
    finally:
        terminal.close()


def rows_of(lines: list[str]) -> list[tuple[str, str]]:
    """(the row's line, its why with continuation lines joined) for every table row."""
    header = next(i for i, line in enumerate(lines) if line.startswith("Verdict"))
    why_at = lines[header].index("Why")
    rows: list[tuple[str, str]] = []
    for line in lines[header + 1 :]:
        if VERDICT.match(line):
            rows.append((line, line[why_at:].strip()))
        elif rows and line.startswith(" " * why_at) and line.strip():
            rows[-1] = (rows[-1][0], rows[-1][1] + " " + line.strip())
        else:
            break
    return rows


def test_80_columns_show_verdict_why_and_whole_addresses(tmux: Tmux) -> None:
    addr = private_loopback()
    healthy_client, healthy_server = pair(host=addr)
    stuck, _ = close_wait_pair(addr)
    peers = {
        "{}:{}".format(*healthy_client.getpeername()),
        "{}:{}".format(*healthy_server.getpeername()),
        "{}:{}".format(*stuck.getpeername()),
    }
    with healthy_client, healthy_server, stuck:
        tmux.start([sys.executable, "-m", "peerwatch", "inspect", "--addr", addr])
        lines = tmux.wait_for(r"\d+ connections: ")
    assert all(len(line) <= WIDTH for line in lines), lines
    header = next(line for line in lines if line.startswith("Verdict"))
    assert header.split()[:3] == ["Verdict", "State", "Peer"] and header.rstrip().endswith("Why")
    rows = rows_of(lines)
    assert len(rows) == 4, lines  # both ends of the healthy pair, the CLOSE_WAIT, its orphan
    assert rows[0][0].startswith("SUSPECT  CLOSE-WAIT"), lines  # worst first
    # the why is complete: the wrapped pieces join back into the verdict's sentence
    assert re.fullmatch(r"PEER_CLOSED: the peer closed its sending side .* a leak otherwise",
                        rows[0][1]), rows[0]  # fmt: skip
    for line, why in rows:
        assert re.match(r"[A-Z_]+: \S", why), line
    # peers are shown whole (address and port), never cut to fit
    shown = {word for line, _ in rows for word in line.split() if word.startswith("127.")}
    assert peers <= shown, (peers, lines)
    assert any("too narrow for:" in line for line in lines), lines


def test_watch_redraws_in_place(tmux: Tmux) -> None:
    addr = private_loopback()
    stuck, _ = close_wait_pair(addr)
    with stuck:
        tmux.start(
            [sys.executable, "-m", "peerwatch", "inspect", "--addr", addr, "--watch",
             "--interval", "0.2", "--count", "5"]
        )  # fmt: skip
        tmux.wait_for(r"\d+ connections: ")
        time.sleep(5 * 0.2 + 1.0)  # every frame drawn (each one read in well under a second)
        lines = tmux.screen()
    titles = [i for i, line in enumerate(lines) if line.startswith("peerwatch inspect - ")]
    assert titles == [0], lines  # one frame on screen, drawn from the top: not scrolled
    assert sum(line.startswith("SUSPECT  CLOSE-WAIT") for line in lines) == 1, lines
    assert all(len(line) <= WIDTH for line in lines), lines
