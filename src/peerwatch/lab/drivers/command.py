"""``peerwatch lab --drivers``: the driver scenarios from the command line.

Reuses the lab command's options: ``--quick`` (CI-sized: PostgreSQL and Redis,
a request in flight when the host loses power, a 12 s bound), ``--scenario``
(fault names), ``--strategy`` (protections), ``--server``, ``--json``,
``--markdown``, ``--list``. Exit status as for the lab: 0 every claim held, 1 one
did not, 2 the scenarios cannot run here (with the reason).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from typing import Any

#: What --quick runs: the issue's CI subset.
QUICK_SERVERS = ("postgresql", "redis")
QUICK_FAULTS = ("power-off-inflight",)
QUICK_PROTECTIONS = ("defaults", "guard")


def _names(values: list[str] | None) -> list[str]:
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


def run(args: argparse.Namespace) -> int:
    from peerwatch.lab.drivers.faults import BY_NAME as FAULTS_BY_NAME
    from peerwatch.lab.drivers.faults import FAULTS, PROTECTIONS
    from peerwatch.lab.drivers.servers import BY_NAME as SERVERS_BY_NAME
    from peerwatch.lab.drivers.servers import SERVERS

    if args.list:
        print("faults:")
        for fault in FAULTS:
            print(f"  {fault.name:20} {fault.summary}")
        print("servers: " + ", ".join(f"{s.name} ({s.driver})" for s in SERVERS))
        print("protections: " + ", ".join(PROTECTIONS))
        return 0
    faults = _names(args.scenario) or list(QUICK_FAULTS if args.quick else FAULTS_BY_NAME)
    servers = _names(args.server) or list(QUICK_SERVERS if args.quick else SERVERS_BY_NAME)
    protections = _names(args.strategy) or list(QUICK_PROTECTIONS if args.quick else PROTECTIONS)
    unknown = (
        [n for n in faults if n not in FAULTS_BY_NAME]
        + [n for n in servers if n not in SERVERS_BY_NAME]
        + [n for n in protections if n not in PROTECTIONS]
    )
    if unknown:
        print(
            f"peerwatch lab: unknown name(s): {', '.join(unknown)}; see --drivers --list",
            file=sys.stderr,
        )
        return 2
    return _run(
        args,
        [f for f in FAULTS if f.name in faults],
        [s for s in SERVERS if s.name in servers],
        [p for p in PROTECTIONS if p in protections],
    )


def _run(
    args: argparse.Namespace, faults: list[Any], servers: list[Any], protections: list[str]
) -> int:
    from rich.console import Console

    from peerwatch.lab.drivers import report
    from peerwatch.lab.drivers.faults import settings_for
    from peerwatch.lab.drivers.runner import prerequisites, protect_available, run_all
    from peerwatch.lab.netns import LabError, clean_stale, run_tag

    if not sys.platform.startswith("linux"):
        print(
            f"peerwatch lab: needs Linux network namespaces; this is {sys.platform}",
            file=sys.stderr,
        )
        return 2
    problems = prerequisites(servers)
    if problems:
        print(f"peerwatch lab --drivers: {'; '.join(problems)}", file=sys.stderr)
        return 2
    # with --json, stdout carries only the JSON lines; the table and progress go to stderr
    console = Console(stderr=args.json, width=None if sys.stdout.isatty() else 220)
    if "run" in protections and not protect_available():
        console.print(
            "  [yellow]peerwatch run is not in this peerwatch yet: 'run' skipped[/yellow]"
        )
        protections = [p for p in protections if p != "run"]
    settings = settings_for("quick" if args.quick else "full")
    clean_stale()
    console.print(
        f"[bold]peerwatch lab --drivers[/bold] ({settings.mode}): {len(faults)} fault(s) x "
        f"{len(servers)} server(s) x {len(protections)} protection(s); budget "
        f"{settings.timeout:g} s, bound {settings.bound:g} s, Linux default TCP timers"
    )

    def on_records(batch: list[Any]) -> None:
        judged = [r for r in batch if r.ok is not None]
        bad = [r for r in judged if not r.ok]
        mark = "[green]ok[/green]" if not bad else f"[red]{len(bad)} unexpected[/red]"
        console.print(
            f"  {batch[0].fault:20} {len(judged) - len(bad)}/{len(judged)} as expected {mark}"
        )

    started = time.monotonic()
    try:
        records = run_all(faults, servers, protections, settings, run_tag(), on_records=on_records)
    except LabError as exc:
        console.print(f"[red]peerwatch lab --drivers: {exc}[/red]")
        return 2
    elapsed = time.monotonic() - started
    console.print(report.render_table(records, f"peerwatch lab --drivers ({settings.mode})"))
    console.print(report.summary_line(records, elapsed))
    meta = {
        "elapsed": round(elapsed, 1),
        "kernel": os.uname().release,
        "protections": protections,
    }
    if args.json:
        from peerwatch.cli.jsonout import emit

        for record in records:
            emit("record", **record.as_dict())
        emit("summary", settings=asdict(settings), **meta)
    if args.save is not None:
        report.write_json(args.save, records, settings, meta)
        console.print(f"records written to {args.save}")
    if args.markdown is not None:
        args.markdown.write_text(report.write_markdown(records, protections))
    return 1 if any(r.ok is False for r in records) else 0
