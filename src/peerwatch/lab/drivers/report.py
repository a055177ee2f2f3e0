"""Outputs of the driver scenarios: a rich table, a matrix, JSON records, Markdown.

The table has one row per fault x server x protection; the matrix (Markdown,
for docs) one row per fault x server and one column per protection, which is
the table users look for: "what does my driver do, and what does peerwatch
change".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from peerwatch.lab.drivers.faults import DriverSettings
from peerwatch.lab.drivers.runner import DriverRecord


def outcome_text(r: DriverRecord) -> str:
    if r.outcome == "never":
        return "never"
    if r.outcome == "failed":
        return "set-up failed"
    seconds = "" if r.seconds is None else f" {r.seconds:.1f} s"
    return ("error" if r.outcome == "error" else "reply") + seconds


def _ok_text(r: DriverRecord) -> str:
    if r.ok is None:
        return "–"
    return "ok" if r.ok else f"FAIL: {r.why}"


def render_table(records: Sequence[DriverRecord], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in ("fault", "server", "driver", "protection", "socket", "outcome", "what it saw"):
        table.add_column(column)
    table.add_column("expected")
    table.add_column("ok")
    for r in records:
        ok = _ok_text(r)
        style = "green" if r.ok else ("red" if r.ok is False else "dim")
        table.add_row(
            r.fault,
            r.server,
            r.driver,
            r.protection,
            r.socket,
            outcome_text(r),
            r.saw,
            r.expected,
            f"[{style}]{ok}[/{style}]",
        )
    return table


def summary_line(records: Sequence[DriverRecord], elapsed: float) -> str:
    judged = [r for r in records if r.ok is not None]
    bad = [r for r in judged if not r.ok]
    return (
        f"{len(records)} measurements, {len(judged)} with a claim: "
        f"{len(judged) - len(bad)} as expected, {len(bad)} not; {elapsed:.0f} s"
    )


def write_json(
    path: Path, records: Sequence[DriverRecord], s: DriverSettings, meta: dict[str, Any]
) -> None:
    payload = {"settings": asdict(s), **meta, "records": [r.as_dict() for r in records]}
    path.write_text(json.dumps(payload, indent=2) + "\n")


def write_markdown(records: Sequence[DriverRecord], protections: Sequence[str]) -> str:
    """One row per fault x server, one column per protection: outcome and seconds waited;
    the last column: keepalive and user timeout the driver sets by itself (read back)."""
    header = "| fault | server (driver) | " + " | ".join(protections) + " | socket by default |"
    lines = [header, "|---|---|" + "---|" * (len(protections) + 1)]
    rows: dict[tuple[str, str], dict[str, DriverRecord]] = {}
    for r in records:
        rows.setdefault((r.fault, f"{r.server} ({r.driver})"), {})[r.protection] = r
    for (fault, server), cells in rows.items():
        texts = []
        for protection in protections:
            cell = cells.get(protection)
            if cell is None:
                texts.append("n/a")
                continue
            mark = "" if cell.ok is None else (" ✓" if cell.ok else " ✗")
            texts.append(outcome_text(cell) + mark)
        default = cells.get("defaults")
        texts.append(default.socket if default is not None else "")
        lines.append(f"| {fault} | {server} | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"
