"""The one ``--json`` convention of every command: JSON lines on stdout (docs/JSON.md).

Each line is one object that starts with ``time`` (RFC 3339, UTC, microseconds:
``2026-11-30T04:58:00.123456Z``, sortable as text and read by jq, Loki and
Elasticsearch alike) and ``event`` (what the line is about); the fields of that
event follow. Human-readable progress goes to stderr, so ``cmd --json | jq``
sees only objects.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

__all__ = ["emit", "json_line", "timestamp"]


def timestamp(epoch: float | None = None) -> str:
    """``epoch`` (default: now) as RFC 3339 UTC with microseconds and a ``Z``."""
    moment = dt.datetime.fromtimestamp(time.time() if epoch is None else epoch, dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_line(event: str, fields: dict[str, object], at: float | None = None) -> str:
    """One line of the convention: ``{"time": ..., "event": event, **fields}``."""
    if "time" in fields or "event" in fields:
        raise ValueError("'time' and 'event' are set by the convention, not by a field")
    return json.dumps({"time": timestamp(at), "event": event, **fields})


def emit(event: str, /, **fields: object) -> None:
    """Print one JSON line, stamped now, to stdout and flush (a pipe reader sees it at once)."""
    sys.stdout.write(json_line(event, fields) + "\n")
    sys.stdout.flush()
