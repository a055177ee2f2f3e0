"""``python -m bench [idle|throughput|detection|accept|scale|resume ...] [--quick] [--out DIR]``.

A full run saves each benchmark's results as ``bench/results/<name>.json`` and
rewrites ``docs/BENCHMARKS.md`` and ``docs/benchmarks.png`` from every saved
result (so running one benchmark refreshes its section and keeps the others).
``--quick`` is a smoke run of a few seconds per benchmark; its results and
report go to ``--out`` (a temporary directory by default), never to docs/.
``--report-only`` rewrites the report from the saved results without measuring
(after editing ``bench/analysis.md``, say).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.procs import machine_description, raise_nofile

ROOT = Path(__file__).resolve().parent.parent


def runners() -> dict[str, Callable[..., dict[str, Any]]]:
    from bench.accept import run_accept
    from bench.detection import run_detection
    from bench.exporter import run_exporter
    from bench.idle import run_idle
    from bench.inspect_table import run_inspect
    from bench.protect_cost import run_protect
    from bench.resume import run_resume
    from bench.scale import run_scale
    from bench.throughput import run_throughput

    return {
        "throughput": run_throughput,
        "idle": run_idle,
        "detection": run_detection,
        "accept": run_accept,
        "exporter": run_exporter,
        "protect": run_protect,
        "inspect": run_inspect,
        "scale": run_scale,
        "resume": run_resume,
    }


def code_description() -> dict[str, Any]:
    """Which peerwatch was measured: the commit, local changes, or another copy entirely."""
    import peerwatch

    info: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(ROOT)]
        info["commit"] = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=True
        ).stdout
        info["dirty"] = bool(status.strip())
    location = Path(peerwatch.__file__).resolve().parent
    if location != ROOT / "src" / "peerwatch":
        info["override"] = str(location)
    return info


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (CI)")
    parser.add_argument("--out", type=Path, help="directory for results and report")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from saved results"
    )
    options = parser.parse_args(argv)
    available = runners()
    names = options.names or list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(available)}")
    if options.out is not None:
        results_dir = docs_dir = options.out
    elif options.quick:
        results_dir = docs_dir = Path(tempfile.mkdtemp(prefix="peerwatch-bench-"))
    else:
        results_dir, docs_dir = ROOT / "bench" / "results", ROOT / "docs"
    results_dir.mkdir(parents=True, exist_ok=True)
    docs_dir.mkdir(parents=True, exist_ok=True)
    raise_nofile()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "quick": options.quick,
        "code": code_description(),
    }
    status = 0
    if options.report_only:
        names = []
    for name in names:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            result = available[name](quick=options.quick, log=lambda s: print(s, flush=True))
        except Exception as exc:  # one broken benchmark must not hide the others
            print(f"   {name} FAILED: {exc!r}", file=sys.stderr, flush=True)
            status = 1
            continue
        result["meta"] = {**meta, "seconds": round(time.monotonic() - started, 1)}
        (results_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
        print(f"   {name} done in {result['meta']['seconds']} s", flush=True)
    from bench.report import write_markdown, write_plot

    results = {}
    for name in available:
        path = results_dir / f"{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
    write_markdown(results, docs_dir / "BENCHMARKS.md", "benchmarks.png")
    write_plot(results, docs_dir / "benchmarks.png")
    if "scale" in results:
        from bench.scale_report import write_scale_plot

        write_scale_plot(results["scale"], docs_dir / "scale.png")
    print(f"report: {docs_dir / 'BENCHMARKS.md'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
