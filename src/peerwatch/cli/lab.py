"""peerwatch lab: the TCP puzzles on real kernel stacks, every detection strategy measured.

Builds two hosts (kang, kodos) and a switch in network namespaces, injects
each fault, and reports what every strategy saw and when. As root it uses
network namespaces directly; otherwise it re-runs itself inside an
unprivileged user namespace, and refuses with the reason when neither works.
Exit status: 0 when every expectation held, 1 when one failed, 2 when the lab
cannot run here. ``--json``: one JSON line per (scenario, strategy) record and a
closing summary on stdout, progress on stderr (docs/JSON.md); ``--save FILE``
writes the whole run as one JSON document.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from peerwatch.cli.args import require_extras


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lab",
        help="reproduce the TCP puzzles in network namespaces and measure every detection strategy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the CI-sized run (about 90 s; the full run takes about 4 min)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="run only this scenario (repeatable, or comma-separated); see --list",
    )
    parser.add_argument(
        "--strategy",
        action="append",
        metavar="NAME",
        help="measure only this strategy (repeatable, or comma-separated); see --list",
    )
    parser.add_argument(
        "--json", action="store_true", help="records as JSON lines on stdout (docs/JSON.md)"
    )
    parser.add_argument(
        "--save", type=Path, metavar="FILE.json", help="write the run as one JSON document"
    )
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="plot detection times")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the table as Markdown")
    parser.add_argument(
        "--userns",
        action="store_true",
        help="run inside an unprivileged user namespace even as root",
    )
    parser.add_argument("--list", action="store_true", help="list scenarios and strategies")
    parser.add_argument(
        "--drivers",
        action="store_true",
        help="the driver scenarios: real servers (PostgreSQL, Redis, nginx, RabbitMQ, NATS) and"
        " their drivers under faults; --scenario then names faults, --strategy protections",
    )
    parser.add_argument(
        "--server",
        action="append",
        metavar="NAME",
        help="with --drivers: only this server (repeatable, or comma-separated)",
    )
    parser.add_argument("--inside-userns", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def _names(values: list[str] | None) -> list[str]:
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


def run(args: argparse.Namespace) -> int:
    if args.drivers:
        from peerwatch.lab.drivers.command import run as run_drivers

        return run_drivers(args)
    from peerwatch.lab.scenarios import BY_NAME as SCENARIOS_BY_NAME
    from peerwatch.lab.scenarios import SCENARIOS
    from peerwatch.lab.strategies import BY_NAME as STRATEGIES_BY_NAME
    from peerwatch.lab.strategies import STRATEGIES

    if args.list:
        width = max(len(name) for name in (*SCENARIOS_BY_NAME, *STRATEGIES_BY_NAME))
        print("scenarios:")
        for scenario in SCENARIOS:
            print(f"  {scenario.name:{width}} {scenario.summary}")
        print("strategies:")
        for strategy in STRATEGIES:
            print(f"  {strategy.name:{width}} {strategy.summary}")
        return 0
    wanted_scenarios = _names(args.scenario)
    wanted_strategies = _names(args.strategy)
    unknown = [n for n in wanted_scenarios if n not in SCENARIOS_BY_NAME] + [
        n for n in wanted_strategies if n not in STRATEGIES_BY_NAME
    ]
    if unknown:
        print(f"peerwatch lab: unknown name(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    scenarios = [s for s in SCENARIOS if not wanted_scenarios or s.name in wanted_scenarios]
    strategies = [s for s in STRATEGIES if not wanted_strategies or s.name in wanted_strategies]
    scenarios, refused = _without_missing_store(scenarios, bool(wanted_scenarios))
    if refused:
        return refused
    if not any(sc.runs(st) for sc in scenarios for st in strategies):
        # e.g. the resumable session in a scenario where the peer never comes back
        print(
            "peerwatch lab: none of these strategies runs in these scenarios"
            " (peerwatch-resume runs only where the peer comes back); see --list",
            file=sys.stderr,
        )
        return 2

    wanted = ["rich", "pyroute2", "websockets"] + (["matplotlib"] if args.plot else [])
    if missing := require_extras("lab", "lab", wanted):
        return missing
    refusal = _where_to_run(args)
    if refusal is not None:
        return refusal
    return _run_lab(args, scenarios, strategies)


def _without_missing_store(scenarios: list[Any], chosen: bool) -> tuple[list[Any], int]:
    """Leave out the shared-store scenario where Redis cannot run (a note), or refuse (exit 2)
    when it was asked for by name."""
    from peerwatch.lab.sessionstore import store_missing

    shared = [s.name for s in scenarios if s.session_store == "redis"]
    why = store_missing() if shared else None
    if why is None:
        return scenarios, 0
    if chosen:
        print(f"peerwatch lab: {', '.join(shared)} needs Redis: {why}", file=sys.stderr)
        return scenarios, 2
    print(f"peerwatch lab: leaving out {', '.join(shared)}: {why}")
    return [s for s in scenarios if s.session_store != "redis"], 0


def _where_to_run(args: argparse.Namespace) -> int | None:
    """None to run here; otherwise the exit status after refusing or running in a user ns."""
    from peerwatch.lab.netns import can_create_namespaces, userns_argv, userns_available

    if not sys.platform.startswith("linux"):
        print(
            f"peerwatch lab: needs Linux network namespaces; this is {sys.platform}",
            file=sys.stderr,
        )
        return 2
    if args.inside_userns:
        return None
    able, why = can_create_namespaces()
    if able and not args.userns:
        return None
    if why != "not root" and not args.userns:
        print(f"peerwatch lab: {why}", file=sys.stderr)
        return 2
    possible, reason = userns_available()
    if not possible:
        print(f"peerwatch lab: not root, and no user namespace either: {reason}", file=sys.stderr)
        return 2
    proc = subprocess.Popen(userns_argv(_forwarded(args)))
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the child got the same SIGINT and tears down
        return proc.wait()


def _forwarded(args: argparse.Namespace) -> list[str]:
    argv: list[str] = []
    if args.quick:
        argv.append("--quick")
    for name in _names(args.scenario):
        argv += ["--scenario", name]
    for name in _names(args.strategy):
        argv += ["--strategy", name]
    if args.json:
        argv.append("--json")
    for flag in ("save", "plot", "markdown"):
        value = getattr(args, flag)
        if value is not None:
            argv += [f"--{flag}", str(Path(value).absolute())]
    return argv


def _run_lab(args: argparse.Namespace, scenarios: list[Any], strategies: list[Any]) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from peerwatch.lab import report
    from peerwatch.lab.netns import LabError, clean_stale, run_tag
    from peerwatch.lab.runner import estimate, run_all
    from peerwatch.lab.settings import settings_for

    # Wide enough for the table when the output is a file or a CI log; with --json,
    # stdout carries only JSON lines and the people's view goes to stderr.
    shown = sys.stderr if args.json else sys.stdout
    console = Console(stderr=args.json, width=None if shown.isatty() else 220)
    settings = settings_for("quick" if args.quick else "full")
    removed = clean_stale()
    if removed:
        console.print(f"removed namespaces left by killed runs: {', '.join(removed)}")
    mode = "user namespace" if args.inside_userns else "root"
    console.print(
        f"[bold]peerwatch lab[/bold] ({settings.mode}, {mode}): {len(scenarios)} scenario(s)"
        f" x {len(strategies)} strateg{'y' if len(strategies) == 1 else 'ies'}"
    )
    for line in report.timers_lines(settings):
        console.print(f"  {line}")
    started = time.monotonic()
    progress = Progress(
        TextColumn("{task.description:18}"),
        BarColumn(),
        TextColumn("{task.completed:>4.0f}/{task.total:.0f} s"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )

    def on_records(batch: list[Any]) -> None:
        judged = [r for r in batch if r.ok is not None]
        bad = [r for r in judged if not r.ok]
        mark = "[green]ok[/green]" if not bad else f"[red]{len(bad)} unexpected[/red]"
        progress.console.print(
            f"  {batch[0].scenario:18} {len(judged) - len(bad)}/{len(judged)} as expected {mark}"
        )

    read_back: dict[str, str] = {}

    def on_timers(values: dict[str, str]) -> None:
        read_back.update(values)
        progress.console.print(f"  {report.read_back_line(values)}")

    tag = run_tag()
    try:
        with progress:
            task = progress.add_task("starting", total=estimate(scenarios, settings))

            def tick(name: str, done: float) -> None:
                progress.update(task, completed=done, description=name)

            records = run_all(
                scenarios,
                strategies,
                settings,
                tag,
                tick=tick,
                on_records=on_records,
                on_timers=on_timers,
            )
    except LabError as exc:
        console.print(f"[red]peerwatch lab: {exc}[/red]")
        return 2
    elapsed = time.monotonic() - started
    console.print(report.render_table(records, f"peerwatch lab ({settings.mode})"))
    console.print(report.summary_line(records, elapsed))
    meta = {
        "elapsed": round(elapsed, 1),
        "mode": mode,
        "kernel": os.uname().release,
        "timers_read_back": read_back,
    }
    if args.json:
        from peerwatch.cli.jsonout import emit

        run = report.document(records, settings, meta)
        for record in run.pop("records"):
            emit("record", **record)
        emit("summary", **run)
    if args.save is not None:
        report.write_json(args.save, records, settings, meta)
        console.print(f"records written to {args.save}")
    if args.plot is not None:
        report.write_plot(args.plot, records, settings)
        console.print(f"plot written to {args.plot}")
    if args.markdown is not None:
        args.markdown.write_text(report.write_markdown(records))
    for written in (args.save, args.plot, args.markdown):
        if written is not None:
            _give_back(written)
    return 1 if any(r.ok is False for r in records) else 0


def _give_back(path: Path) -> None:
    """Run through sudo (``make lab``), hand a file we wrote to the user who ran sudo.

    Root needs its privileges for the namespaces, not for the results: a report
    left root-owned in the user's checkout is one they cannot overwrite next time.
    """
    uid, gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
    if os.geteuid() != 0 or not uid.isdigit() or not gid.isdigit():
        return
    try:
        os.chown(path, int(uid), int(gid))
    except OSError as exc:
        print(f"peerwatch lab: {path} stays owned by root: {exc.strerror}", file=sys.stderr)
