"""The ``peerwatch`` entry point itself: version, usage errors, every subcommand registered."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from peerwatch.cli import COMMANDS, build_parser, main

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_version_is_the_installed_package_version() -> None:
    """``peerwatch --version`` prints what pip installed, which is pyproject's version."""
    declared = re.search(r'^version = "([^"]+)"', PYPROJECT.read_text(), re.MULTILINE)
    assert declared is not None
    assert importlib.metadata.version("peerwatch") == declared[1]
    result = subprocess.run(
        [sys.executable, "-m", "peerwatch", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"peerwatch {declared[1]}"


def test_every_subcommand_is_registered() -> None:
    """A subcommand module that fails to import is an error, not a silently missing command."""
    parser = build_parser()
    help_text = parser.format_help()
    for command in COMMANDS:
        assert command in help_text


def test_misspelt_subcommand_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inpsect"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'inpsect'" in err
    assert len(err.strip().splitlines()) == 1


def test_no_subcommand_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err
