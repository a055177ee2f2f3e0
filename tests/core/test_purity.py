"""The codec, the liveness machine, the protocol object and the verdicts are pure: no clock,
no sockets, no event loop (``sys`` only to look up exception classes already imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import peerwatch.core

CORE = Path(peerwatch.core.__file__).parent
PURE = [
    "config.py", "frames.py", "decoder.py", "delivery.py", "liveness.py",
    "session.py", "backoff.py", "protocol.py", "verdicts.py",
]  # fmt: skip
FORBIDDEN = {
    "asyncio", "socket", "select", "selectors", "threading", "time", "os", "random",
    "datetime", "subprocess", "signal",
}  # fmt: skip


@pytest.mark.parametrize("name", PURE)
def test_pure_module_imports_nothing_that_does_io_or_reads_a_clock(name: str) -> None:
    tree = ast.parse((CORE / name).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{name} imports {sorted(imported & FORBIDDEN)}"
    assert imported <= {"__future__", "enum", "struct", "math", "collections", "statistics",
                        "dataclasses", "typing", "peerwatch", "hmac", "itertools", "errno",
                        "sys", "difflib"}  # fmt: skip
