"""Entry point of the small programs the lab runs inside its hosts.

``python -m peerwatch.lab.agents.main server|client SPEC_JSON``

An agent reads commands as JSON lines on stdin and reports what it sees as
JSON lines on stdout (``kit``). Only the chosen role is imported: a raw
client does not pay for asyncio's start-up.

An agent dies with the lab: it asks the kernel for SIGKILL when its parent
exits (PR_SET_PDEATHSIG), so even a lab killed with -9 leaves no agent behind.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from peerwatch.childproc import die_with_parent
from peerwatch.lab.agents.kit import report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("server", "client"):
        print("usage: python -m peerwatch.lab.agents.main server|client SPEC_JSON", file=sys.stderr)
        return 2
    spec: dict[str, Any] = json.loads(args[1])
    if not die_with_parent(signal.SIGKILL, int(spec.get("parent", os.getppid()))):
        return 1  # the lab died before we asked the kernel to follow it
    if args[0] == "server":
        from peerwatch.lab.agents.server import run_server

        return run_server(spec, report)
    if spec["kind"] == "raw":
        from peerwatch.lab.agents.rawclient import run_raw_client

        return run_raw_client(spec, report)
    if spec["kind"] == "resumable":
        from peerwatch.lab.agents.resumeclient import run_resumable_client

        return run_resumable_client(spec, report)
    from peerwatch.lab.agents.asyncclients import run_async_client

    return run_async_client(spec, report)


if __name__ == "__main__":
    raise SystemExit(main())
