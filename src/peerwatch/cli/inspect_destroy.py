"""``peerwatch inspect --destroy [--yes]``: list, then end, the selected connections judged dead.

A dry run by default: it prints what it would end and changes nothing, so the
same command line with ``--yes`` added ends exactly what was shown (what is
still there and still judged the same way at that moment).
"""

from __future__ import annotations

import argparse
import sys

from peerwatch.assessment.model import AssessPolicy
from peerwatch.cli.jsonout import json_line
from peerwatch.diag.destroy import DestroyOutcome, DestroyStopped, destroy_rows, destroy_targets
from peerwatch.diag.view import Filters, Row, snapshot

__all__ = ["run_destroy"]


def run_destroy(filters: Filters, policy: AssessPolicy, args: argparse.Namespace) -> int:
    """0 when every target was ended (or, dry run, listed); 1 when the kernel refused."""
    verdicts_chosen = bool(args.verdict or args.problems)
    targets = destroy_targets(snapshot(filters, policy), verdicts_chosen=verdicts_chosen)
    if not args.yes:
        _report([DestroyOutcome(row, False, "would end") for row in targets], args.json)
        if not args.json:
            which = "selected" if verdicts_chosen else "selected DEAD"
            print(
                f"{_count(len(targets))} {which}: would end "
                f"{'them' if len(targets) != 1 else 'it'}; add --yes to end "
                f"{'them' if len(targets) != 1 else 'it'}"
                if targets
                else f"no {which} connection: nothing to end"
            )
        return 0
    try:
        outcomes = destroy_rows(targets)
    except DestroyStopped as exc:
        _report(exc.outcomes, args.json)  # what was ended before the refusal
        print(f"peerwatch inspect: {exc}", file=sys.stderr)
        return 1
    _report(outcomes, args.json)
    if not args.json:
        ended = sum(o.ended for o in outcomes)
        print(f"ended {ended} of {_count(len(outcomes))}")
    return 0


def _count(n: int) -> str:
    return f"{n} connection{'s' if n != 1 else ''}"


def _report(outcomes: list[DestroyOutcome], as_json: bool) -> None:
    for outcome in outcomes:
        if as_json:
            print(json_line("destroy", outcome.as_dict()))
        else:
            print(_line(outcome.note, outcome.row))
    sys.stdout.flush()


def _line(note: str, row: Row) -> str:
    record, verdict = row.record, row.verdict
    process = row.process_text.encode("unicode_escape").decode("ascii")  # comm is any bytes
    return (
        f"{note:<12} {record.state.name:<11} {record.local_text} -> {record.remote_text} "
        f"{process}  {verdict.describe()}"
    )
