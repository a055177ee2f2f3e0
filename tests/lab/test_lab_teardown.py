"""The lab cleans up after itself: on success, on an exception, on Ctrl-C and SIGTERM.

These build real namespaces (root) and run real agents; "nothing left" is
checked against the kernel's view: named namespaces, links in this namespace,
and processes whose command line names the lab run as their parent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peerwatch.lab.hosts import KANG, KODOS, Lab
from peerwatch.lab.netns import (
    PREFIX,
    Registry,
    can_create_namespaces,
    clean_stale,
    lab_namespaces,
    run_tag,
)
from peerwatch.lab.settings import QUICK

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]


def _need_root() -> None:
    able, why = can_create_namespaces()
    if not able:
        pytest.skip(f"needs root and iproute2/nftables: {why}")


#: Link names the lab uses; it creates them inside its namespaces only, never here.
LAB_LINKS = {"kang", "kodos", "br0"}


def _links() -> set[str]:
    """Lab-named links in this (the test's) network namespace; other tests may add theirs."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}
    return names & LAB_LINKS


def _agents_of(pid: int) -> list[int]:
    """Lab agents started by process ``pid`` (their spec names it as parent)."""
    marker = f'"parent": {pid}'.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"peerwatch.lab.agents.main" in cmdline and marker in cmdline:
            found.append(int(entry.name))
    return found


def test_lab_builds_three_namespaces_and_leaves_nothing() -> None:
    _need_root()
    links_before = _links()
    tag = run_tag()
    with Lab(tag, QUICK.timers) as lab:
        assert set(lab_namespaces(tag)) == {f"{tag}-sw", f"{tag}-kang", f"{tag}-kodos"}
        # the timers really are what the report says
        assert lab.sysctl_values(KANG)["net.ipv4.tcp_retries2"] == str(QUICK.timers.tcp_retries2)
        # kodos's kernel answers a connection to a closed port with RST: the wire works
        probe = f"import socket; socket.create_connection(('{KODOS.address}', 9), timeout=3)"
        reach = subprocess.run(
            lab.exec_argv(KANG, [sys.executable, "-c", probe]),
            capture_output=True,
            text=True,
            check=False,
        )
        assert "ConnectionRefusedError" in reach.stderr, reach.stderr
    assert lab_namespaces(tag) == []
    assert _links() == links_before


def test_an_exception_inside_the_lab_kills_agents_and_removes_namespaces() -> None:
    _need_root()
    tag = run_tag()
    with pytest.raises(RuntimeError, match="boom"), Lab(tag, QUICK.timers, Registry()) as lab:
        sleeper = lab.spawn(KODOS, ["sleep", "60"])
        stopped = lab.spawn(KANG, ["sleep", "60"])
        os.kill(stopped.pid, signal.SIGSTOP)  # a hung process must go too
        raise RuntimeError("boom")
    assert sleeper.poll() is not None
    assert stopped.poll() is not None
    assert lab_namespaces(tag) == []


def test_power_off_then_teardown_leaves_nothing() -> None:
    _need_root()
    tag = run_tag()
    with Lab(tag, QUICK.timers) as lab:
        lab.spawn(KODOS, ["sleep", "60"])
        lab.power_off(KODOS)
        assert f"{tag}-kodos" not in lab_namespaces(tag)
        lab.power_on(KODOS)  # a powered-off host can be booted again
        assert f"{tag}-kodos" in lab_namespaces(tag)
    assert lab_namespaces(tag) == []


def test_clean_stale_removes_namespaces_of_a_dead_run() -> None:
    _need_root()
    dead = subprocess.run(["true"], check=True)  # a pid that existed and is gone
    del dead
    proc = subprocess.Popen(["true"])
    proc.wait()
    name = f"{PREFIX}{proc.pid}-dead-kang"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in clean_stale()
        assert name not in lab_namespaces()
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


@pytest.mark.parametrize(
    ("sig", "times"),
    [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGINT, 3)],
    ids=["SIGINT", "SIGTERM", "impatient-SIGINTx3"],
)
def test_interrupting_a_run_tears_everything_down(sig: signal.Signals, times: int) -> None:
    _need_root()
    links_before = _links()
    # Ctrl-C must reach the lab as it reaches one started at a terminal: a test run from a
    # background job (``make test &``) has SIGINT ignored, and the lab would inherit that
    # (exec resets a handled signal to its default, an ignored one stays ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "peerwatch", "lab", "--quick", "--scenario", "power-off"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    prefix = f"{PREFIX}{proc.pid}-"
    try:
        deadline = time.monotonic() + 60
        # wait until the fault is under way: namespaces exist and agents run
        while time.monotonic() < deadline:
            if len(lab_namespaces(prefix)) == 3 and len(_agents_of(proc.pid)) >= 9:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        else:
            pytest.fail("the lab did not get going within 60 s")
        time.sleep(3.0)  # mid-scenario: power-off done, clients waiting
        for _ in range(times):  # more Ctrl-C while tearing down must not stop the clean-up
            if proc.poll() is None:
                proc.send_signal(sig)
            time.sleep(0.05)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert lab_namespaces(prefix) == []
    assert _agents_of(proc.pid) == []
    assert _links() == links_before


def test_two_labs_run_side_by_side() -> None:
    _need_root()
    first, second = run_tag(), run_tag()
    assert first != second
    with Lab(first, QUICK.timers) as one, Lab(second, QUICK.timers) as two:
        assert len(lab_namespaces(first)) == len(lab_namespaces(second)) == 3
        one.unplug(KODOS)  # a fault in one lab is not a fault in the other
        probe = f"import socket; socket.create_connection(('{KODOS.address}', 9), timeout=3)"
        reach = subprocess.run(
            two.exec_argv(KANG, [sys.executable, "-c", probe]),
            capture_output=True,
            text=True,
            check=False,
        )
        assert "ConnectionRefusedError" in reach.stderr, reach.stderr
    assert lab_namespaces(first) == lab_namespaces(second) == []


def test_a_failing_step_mid_scenario_leaves_no_agent_and_no_namespace() -> None:
    _need_root()
    from peerwatch.lab.netns import LabError
    from peerwatch.lab.runner import run_scenario
    from peerwatch.lab.scenarios import Scenario, Step
    from peerwatch.lab.strategies import BY_NAME

    broken = Scenario(
        "broken",
        "a step the runner does not know: the run fails with agents running",
        peer_dead=True,
        timeline=lambda s: [Step(0.0, "sigstop"), Step(0.2, "meteor-strike")],
        duration=lambda s: 5.0,
    )
    tag = run_tag()
    strategies = [BY_NAME["blocking-read"], BY_NAME["peerwatch"]]
    with pytest.raises(LabError, match="meteor-strike"):
        run_scenario(broken, strategies, QUICK.with_(warmup=0.2), tag)
    assert lab_namespaces(tag) == []
    assert _agents_of(os.getpid()) == []
