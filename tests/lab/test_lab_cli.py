"""`peerwatch lab` refuses clearly, before building anything, when it cannot or should not run."""

from __future__ import annotations

import os
import shutil

import pytest

from peerwatch.lab.netns import PREFIX, lab_namespaces


def test_refuses_clearly_without_root_and_without_user_namespaces(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not root and no unshare: exit status 2 and the reason, before touching anything."""
    from peerwatch.cli import main
    from peerwatch.lab import netns

    real_which = shutil.which
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(
        netns.shutil, "which", lambda name: None if name == "unshare" else real_which(name)
    )
    assert main(["lab", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "not root" in err
    assert "unshare" in err
    assert not [n for n in lab_namespaces() if n.startswith(f"{PREFIX}{os.getpid()}-")]


def test_unknown_names_are_refused_with_the_list_hint(capsys: pytest.CaptureFixture[str]) -> None:
    from peerwatch.cli import main

    assert main(["lab", "--scenario", "meteor-strike"]) == 2
    assert "--list" in capsys.readouterr().err


def test_refuses_without_its_extras(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from peerwatch.cli import main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pyroute2" else real_find_spec(name, *a),
    )
    assert main(["lab", "--quick"]) == 2
    assert "peerwatch[lab]" in capsys.readouterr().err


def test_a_choice_that_measures_nothing_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from peerwatch.cli import main

    # the resumable session runs only where the peer comes back; crash is not such a scenario
    assert main(["lab", "--scenario", "crash", "--strategy", "peerwatch-resume"]) == 2
    err = capsys.readouterr().err
    assert "peerwatch-resume runs only where the peer comes back" in err
    assert len(err.strip().splitlines()) == 1


def test_without_redis_the_shared_store_scenario_is_refused_or_left_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from peerwatch.cli import main
    from peerwatch.cli.lab import _without_missing_store
    from peerwatch.lab import sessionstore
    from peerwatch.lab.scenarios import SCENARIOS

    real_which = shutil.which

    def which(name: str) -> str | None:
        return None if name == "redis-server" else real_which(name)

    monkeypatch.setattr(sessionstore.shutil, "which", which)
    assert main(["lab", "--scenario", "power-cycle-shared"]) == 2
    err = capsys.readouterr().err
    assert "needs Redis: redis-server is not installed" in err
    assert len(err.strip().splitlines()) == 1
    # not asked for by name: the run goes on without it, and says so
    kept, refused = _without_missing_store(list(SCENARIOS), chosen=False)
    assert refused == 0
    assert [s.name for s in SCENARIOS if s not in kept] == ["power-cycle-shared"]
    assert "leaving out power-cycle-shared" in capsys.readouterr().out
