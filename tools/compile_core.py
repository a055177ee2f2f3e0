"""The optional compiled build of peerwatch's pure core (issue 13): mypyc, or pure Python.

The sans-IO core is checked by ``mypy --strict`` already, which is what mypyc needs to
turn it into C extension modules. Only the modules on the per-message path are
compiled (``HOT``); every other module, and every module on a machine without a C
compiler or without mypyc, stays pure Python. The import works either way: a compiled
module and its ``.py`` sit side by side and Python prefers the extension.

Two ways in:

* ``PEERWATCH_COMPILE=1 pip install .``: the hatchling build hook below (configured in
  pyproject.toml) compiles ``HOT`` into the wheel; without a compiler it warns and
  builds the pure wheel. Editable installs (``pip install -e``) always stay pure.
* ``python tools/compile_core.py DIR`` (``make compiled``): a copy of ``src/peerwatch``
  with the compiled modules in ``DIR``, for ``PYTHONPATH=DIR``: how the benchmarks
  measure the pure and the compiled build side by side (``make bench-compiled``).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script: no hatchling needed
    BuildHookInterface = object  # type: ignore[assignment,misc]

ROOT = Path(__file__).resolve().parent.parent
#: The per-message path: decoding, reassembly, delivery books, the protocol object,
#: the liveness clock it touches on every read. Two stay pure: ``core/empty.py``
#: subclasses deque, which a compiled class cannot; ``core/frames.py`` holds
#: ``GoodbyeCode | int`` values, which compiled code keeps as machine ints, losing the
#: enum (the core tests caught it: a GOODBYE decoded with ``code=1``).
HOT = ("decoder", "delivery", "protocol", "liveness")
#: What the build hook needs in the isolated build environment when compiling.
COMPILE_REQUIRES = ["mypy==2.4.1", "setuptools>=65"]


def note(text: str) -> None:
    print(f"peerwatch: {text}", file=sys.stderr)


def compile_core(root: Path, out: Path) -> dict[str, str] | None:
    """Compile ``HOT`` from ``root/src`` into ``out``; {built file: its path in a wheel}.

    None when this machine cannot compile (no mypyc, no setuptools, no C compiler, or
    mypyc refuses the code): the caller keeps the pure modules. The compiler's output
    goes to stdout and stderr; the reason for a fallback is one line on stderr.
    """
    try:
        from mypyc.build import mypycify
        from setuptools import Distribution
    except ImportError as exc:
        note(f"no compiled core ({exc}): pure Python")
        return None
    sources = [f"src/peerwatch/core/{name}.py" for name in HOT]
    work = Path(tempfile.mkdtemp(prefix="peerwatch-mypyc-"))
    cwd = os.getcwd()
    try:
        os.chdir(root)  # mypyc names modules from the paths: src/peerwatch/... -> peerwatch...
        # mypy's cache and the C sources stay out of the checkout (CI builds as root)
        options = ["--cache-dir", str(work / "mypy-cache"), *sources]
        extensions = mypycify(options, opt_level="3", target_dir=str(work / "c"))
        dist = Distribution({"name": "peerwatch-core", "ext_modules": extensions})
        build = dist.get_command_obj("build_ext")
        build.build_lib = str(out)  # type: ignore[attr-defined]
        build.build_temp = str(work / "temp")  # type: ignore[attr-defined]
        dist.run_command("build_ext")
    except (Exception, SystemExit) as exc:  # distutils reports a compiler failure by exiting
        note(f"compiling the core failed ({exc}): pure Python")
        return None
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
    built = [p for p in out.rglob("*") if p.suffix in (".so", ".pyd")]
    return {str(path): path.relative_to(out).as_posix() for path in built}


class CompileCoreHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    """hatchling build hook: compiles the core into a wheel when PEERWATCH_COMPILE=1."""

    PLUGIN_NAME = "custom"

    @staticmethod
    def wanted() -> bool:
        return os.environ.get("PEERWATCH_COMPILE", "") == "1"

    def dependencies(self) -> list[str]:
        return COMPILE_REQUIRES if self.wanted() else []

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if not self.wanted() or self.target_name != "wheel" or version == "editable":
            return
        built = compile_core(Path(self.root), Path(self.directory) / "peerwatch-compiled")
        if built:
            build_data["pure_python"] = False  # a platform wheel: cp3xx-linux_x86_64
            build_data["infer_tag"] = True
            build_data["force_include"].update(built)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tools/compile_core.py DIR", file=sys.stderr)
        return 2
    out = Path(argv[0]).resolve()
    shutil.rmtree(out, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.so")
    shutil.copytree(ROOT / "src" / "peerwatch", out / "peerwatch", ignore=ignore)
    built = compile_core(ROOT, out)
    if not built:
        print(f"{out}: pure Python only (could not compile)", file=sys.stderr)
        return 1
    print(f"{out}: compiled {', '.join(sorted(built.values()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
