"""`peerwatch demo` shows three real deaths with the right causes."""

from __future__ import annotations

import re

import pytest

from peerwatch.cli import main

pytestmark = pytest.mark.timeout(60)


def test_demo_prints_one_verdict_per_fault(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--interval", "0.1", "--timeout", "0.5"]) == 0
    out = capsys.readouterr().out
    causes = re.findall(r"^peer (\w+)\s+-> (\w+)", out, re.MULTILINE)
    assert causes[0] == ("close", "GOODBYE")
    assert causes[1] == ("freeze", "HUNG")
    assert causes[2][0] == "kill" and causes[2][1] in ("EOF", "RESET")


def test_demo_json_is_one_line_per_fault(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["demo", "--json", "--interval", "0.1", "--timeout", "0.5"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["event"], r["fault"]) for r in lines] == [
        ("verdict", "close"), ("verdict", "freeze"), ("verdict", "kill")
    ]  # fmt: skip
    assert lines[1]["cause"] == "HUNG" and lines[1]["took_ms"] > 0
