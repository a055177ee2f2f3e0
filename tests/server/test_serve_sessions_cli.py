"""``serve --resume-window S --session-store URL``: typos are one line and exit 2, a store that
does not answer is one line and exit 1, before any worker starts."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from peerwatch.errors import ConfigError
from peerwatch.server import StartError, run_workers
from peerwatch.testing.servers import free_port

pytestmark = pytest.mark.timeout(120)

PEERWATCH = [sys.executable, "-m", "peerwatch", "serve", "--port", "0"]

TYPOS = {
    "zero window": (["--resume-window", "0"], "--resume-window: must be > 0"),
    "window not a number": (["--resume-window", "30s"], "expected a number"),
    "infinite window": (["--resume-window", "inf"], "finite"),
    "store port not a number": (["--session-store", "redis://127.0.0.1:63a9/0"], "Port"),
    "store port too large": (["--session-store", "redis://127.0.0.1:99999/0"], "out of range"),
    "store database not a number": (["--session-store", "redis://127.0.0.1:6379/x"], "number"),
    "store scheme": (["--session-store", "http://127.0.0.1:6379/0"], "schemes"),
    "store 'memory' misspelt": (["--session-store", "memroy"], "schemes"),
    "store unknown option": (["--session-store", "redis://h:1/0?timout=3"], "unknown option"),
}


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def refusals() -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        argvs = [[*PEERWATCH, *args] for args, _ in TYPOS.values()]
        return dict(zip(TYPOS, pool.map(run, argvs), strict=True))


@pytest.mark.parametrize("case", list(TYPOS))
def test_a_typo_is_one_line_naming_the_argument_and_exit_two(
    case: str, refusals: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = refusals[case]
    _, reason = TYPOS[case]
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("peerwatch serve: argument --"), line
    assert reason in line
    assert result.stdout == ""


def test_a_store_that_does_not_answer_is_one_line_and_exit_one_before_any_worker() -> None:
    port = free_port()  # nothing listens there
    result = run([*PEERWATCH, "--workers", "2", "--session-store", f"redis://127.0.0.1:{port}/0"])
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"peerwatch serve: session store redis 127.0.0.1:{port}/0 does not")
    assert "Connection refused" in line or "connecting" in line
    assert result.stdout == ""


def test_without_redis_py_the_hint_names_the_extra() -> None:
    hide = (
        "import sys; sys.modules['redis'] = None; from peerwatch.cli import main;"
        " sys.exit(main(sys.argv[1:]))"
    )
    argv = ["serve", "--port", "0", "--session-store", "redis://127.0.0.1:6379/0"]
    result = run([sys.executable, "-c", hide, *argv])
    assert result.returncode == 2, result.stderr
    assert result.stderr == "peerwatch serve: needs redis: pip install 'peerwatch[sessions]'\n"


def test_the_library_refuses_the_same_mistakes() -> None:
    with pytest.raises(ConfigError, match="the database is a number"):
        run_workers("echo", session_store="redis://127.0.0.1:6379/x")
    with pytest.raises(ConfigError, match="window must be a positive number"):
        run_workers("echo", resume_window=-1.0)
    with pytest.raises(StartError, match="does not answer"):
        run_workers("echo", session_store=f"redis://127.0.0.1:{free_port()}/0")
