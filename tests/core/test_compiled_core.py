"""The optional compiled core (tools/compile_core.py): it builds, it is what gets imported,
it passes the core's own tests, and without a C compiler it falls back to pure Python."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypyc")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "compile_core.py"
#: the core tests that drive the compiled modules hardest: every frame, the protocol object,
#: the delivery books
CORE_TESTS = [
    "tests/core/test_frames.py",
    "tests/core/test_protocol.py",
    "tests/core/test_delivery.py",
]


def run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )


def test_the_compiled_core_imports_and_passes_the_core_tests(tmp_path: Path) -> None:
    out = tmp_path / "compiled"
    built = run(sys.executable, str(SCRIPT), str(out))
    assert built.returncode == 0, built.stdout + built.stderr[-3000:]
    where = run(
        sys.executable,
        "-c",
        "from peerwatch.core import decoder, frames, protocol; print(decoder.__file__);"
        " print(protocol.__file__); print(frames.__file__)",
        PYTHONPATH=str(out),
    )
    decoder, protocol, frames = where.stdout.split()
    assert decoder.startswith(str(out)) and decoder.endswith(".so")
    assert protocol.endswith(".so")
    assert frames.endswith(".py")  # kept pure on purpose (GoodbyeCode | int)
    tests = run(
        sys.executable,
        *("-m", "pytest", "-q", "-x", "-p", "no:randomly", "-p", "no:cacheprovider"),
        *CORE_TESTS,
        PYTHONPATH=str(out),
    )
    assert tests.returncode == 0, tests.stdout[-3000:]


def test_without_a_c_compiler_the_build_stays_pure_python(tmp_path: Path) -> None:
    out = tmp_path / "pure"
    built = run(sys.executable, str(SCRIPT), str(out), CC="/nonexistent/cc")
    assert built.returncode == 1
    assert "pure Python" in built.stderr
    assert not list(out.rglob("*.so"))
    imported = run(
        sys.executable,
        "-c",
        "import peerwatch.core.protocol as p; print(p.__file__)",
        PYTHONPATH=str(out),
    )
    assert imported.stdout.strip() == str(out / "peerwatch" / "core" / "protocol.py")


def test_a_usage_error_is_one_line_and_status_2() -> None:
    result = run(sys.executable, str(SCRIPT))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
