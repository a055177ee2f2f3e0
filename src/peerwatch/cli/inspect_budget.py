"""``peerwatch inspect --idle-limit S``: which connections a middlebox idle limit S would break.

Prints each ESTABLISHED connection (of those the filters select) that is at
risk, with the reason and the one-line fix, then a summary line; ``--json``
prints one object per audited connection with a ``budget`` member (findings
empty when it is safe).
"""

from __future__ import annotations

import argparse
import sys
import time

from peerwatch.assessment.model import AssessPolicy
from peerwatch.cli.jsonout import json_line
from peerwatch.diag.budget import audit_rows
from peerwatch.diag.view import Filters, snapshot

__all__ = ["run_budget"]


def run_budget(filters: Filters, policy: AssessPolicy, args: argparse.Namespace) -> int:
    limit: float = args.idle_limit
    audited = audit_rows(snapshot(filters, policy), limit)
    if args.json:
        stamp = time.time()  # one snapshot: one time on every line
        for entry in audited:
            print(json_line("audit", entry.as_dict(limit), stamp))
        sys.stdout.flush()
        return 0
    at_risk = [entry for entry in audited if entry.findings]
    for entry in at_risk:
        record = entry.row.record
        process = entry.row.process_text.encode("unicode_escape").decode("ascii")
        print(f"{record.local_text} -> {record.remote_text}  {process}  ({entry.applied_text()})")
        for finding in entry.findings:
            print(f"  {finding.problem}: {finding.detail}")
            print(f"    fix: {finding.fix}")
    print(
        f"idle limit {limit:g} s: {len(at_risk)} of {len(audited)} established "
        f"connection{'s' if len(audited) != 1 else ''} at risk"
    )
    return 0
