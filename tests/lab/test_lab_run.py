"""`peerwatch lab --quick`, the real thing: every fault, every strategy, judged; and its modes.

The quick run is the project's proof that the articles' behaviours reproduce
on real kernel stacks and that peerwatch detects within its bound; it takes
about two minutes. The unprivileged runs prove the user-namespace mode.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peerwatch.lab.netns import PREFIX, can_create_namespaces, lab_namespaces, userns_available

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


def _leaked(before: set[str]) -> list[str]:
    """Lab namespaces that appeared since ``before`` and whose creating process is gone.

    Other labs (another test run on the same machine) may come and go meanwhile;
    their namespaces belong to live processes. A leak is one whose owner died.
    """
    leaked = []
    for name in set(lab_namespaces()) - before:
        pid = int(name[len(PREFIX) :].split("-", 1)[0])
        if not Path(f"/proc/{pid}").exists():
            leaked.append(name)
    return leaked


def _lab(*args: str, timeout: float, user: int | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "peerwatch", "lab", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.slow
def test_quick_run_reproduces_the_articles_and_peerwatch_meets_its_bound(tmp_path: Path) -> None:
    able, why = can_create_namespaces()
    if not able:
        pytest.skip(f"needs root: {why}")
    before = set(lab_namespaces())
    out, plot = tmp_path / "lab.json", tmp_path / "lab.png"
    result = _lab("--quick", "--save", str(out), "--plot", str(plot), timeout=280)
    report = json.loads(out.read_text())
    failed = [r for r in report["records"] if r["ok"] is False]
    assert result.returncode == 0, (failed, result.stdout[-3000:], result.stderr[-3000:])
    records = {(r["scenario"], r["strategy"]): r for r in report["records"]}
    # the articles' ten scenarios x eight strategies; where the peer comes back, four
    assert len(records) == 10 * 8 + 4 * 4
    # the claims, restated against the records (the judges already checked them)
    for scenario in ("power-cycle", "power-off", "partition-oneway", "hung", "crash"):
        for strategy in ("peerwatch", "peerwatch-adaptive"):
            record = records[(scenario, strategy)]
            assert record["detected"] and record["seconds"] <= report["settings"]["bound"], record
    for scenario in ("cable-pull", "loss", "slow-reader"):
        assert not records[(scenario, "peerwatch")]["detected"], records[(scenario, "peerwatch")]
    assert records[("hung", "peerwatch")]["saw"].endswith("HUNG")
    assert records[("power-off", "peerwatch")]["saw"].endswith("SILENT")
    # issue 12: a plain connection dies of an outage longer than its bound, the resumable
    # session carries on with every message once, and without the session's state (a
    # rebooted server with the in-process store) it hands back exactly what was not taken;
    # with the shared store (Redis) it resumes on the rebooted server
    for scenario in ("cable-out-2x", "partition-heals"):
        assert records[(scenario, "peerwatch")]["saw"].startswith("SILENT")
        resumed = records[(scenario, "peerwatch-resume")]["saw"]
        assert " · resumed " in resumed and resumed.endswith("echoes once, in order"), resumed
    lost = records[("power-cycle-restart", "peerwatch-resume")]["saw"]
    assert "SESSION_LOST UNKNOWN" in lost and "handed back" in lost, lost
    shared = records[("power-cycle-shared", "peerwatch-resume")]["saw"]  # books in Redis
    assert " · resumed " in shared and shared.endswith("echoes once, in order"), shared
    half_open = records[("half-open", "blocking-read")]["states"]
    assert [s for s in half_open["kodos"] if s.startswith("FIN_WAIT2 ")], half_open
    assert [s for s in half_open["kang"] if s.startswith("CLOSE_WAIT")], half_open
    assert plot.stat().st_size > 10_000
    assert _leaked(before) == []


def test_a_run_as_root_in_a_user_namespace_leaves_the_host_untouched() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    possible, why = userns_available()
    if not possible:
        pytest.skip(why)
    before = set(lab_namespaces())
    result = _lab(
        "--userns",
        "--quick",
        "--scenario",
        "graceful-close,power-cycle",
        "--strategy",
        "blocking-read,peerwatch",
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "user namespace" in result.stdout
    assert "4 as expected, 0 not" in result.stdout
    assert _leaked(before) == []  # its namespaces lived in its own mount namespace


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_unprivileged_user_runs_the_lab_in_a_user_namespace() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to become nobody) and setpriv")
    # nobody must be able to run this Python, inside a user namespace too (a venv
    # under a 0700 home is not reachable from there)
    probe = _as_nobody(
        "unshare", "--user", "--map-root-user", "--net", "--mount", "--",
        sys.executable, "-c", "import peerwatch.cli.lab",
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"nobody cannot run this Python in a user namespace: {probe.stderr.strip()}")
    result = _lab(
        "--quick",
        "--scenario",
        "crash",
        "--strategy",
        "blocking-read,peerwatch",
        timeout=120,
        user=NOBODY,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "user namespace" in result.stdout
