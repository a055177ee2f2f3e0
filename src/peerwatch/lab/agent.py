"""Entry point of the small programs the lab runs inside its hosts.

``python -m peerwatch.lab.agent server|client SPEC_JSON``

An agent reads commands as JSON lines on stdin and reports what it sees as
JSON lines on stdout, each stamped with ``time.monotonic()``. CLOCK_MONOTONIC
is one clock for the whole machine (network namespaces do not change it), so
the lab can subtract the time it injected a fault from the time an agent saw
something, across processes and namespaces.

An agent dies with the lab: it asks the kernel for SIGKILL when its parent
exits (PR_SET_PDEATHSIG), so even a lab killed with -9 leaves no agent behind.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from peerwatch.childproc import die_with_parent, write_json_line

Emit = Callable[..., None]


def report(event: str, **fields: Any) -> None:
    """Tell the lab one event, stamped with CLOCK_MONOTONIC; safe to call from any thread."""
    write_json_line({"t": time.monotonic(), "ev": event, **fields})


#: Event-loop lag worth reporting: the agent itself was not running (machine overloaded).
STALL_REPORT = 0.25
STALL_PERIOD = 0.05


async def watch_stalls(emit: Emit) -> None:
    """Report when this agent's event loop ran late: then the agent, not the network, was slow.

    A lab host whose application is starved of CPU is a hung peer in fact; the
    runner uses these reports to tell such a measurement from a false alarm.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(STALL_PERIOD)
        late = loop.time() - before - STALL_PERIOD
        if late >= STALL_REPORT:
            emit("stall", seconds=round(late, 3), since=before + STALL_PERIOD)


def read_commands(handle: Callable[[dict[str, Any]], None]) -> threading.Thread:
    """Feed each JSON line of stdin to ``handle`` from a daemon thread; EOF means stop."""

    def loop() -> None:
        for raw_line in sys.stdin:
            line = raw_line.strip()
            if not line:
                continue
            try:
                command = json.loads(line)
            except ValueError:
                continue
            handle(command)
        handle({"cmd": "stop"})

    thread = threading.Thread(target=loop, name="commands", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("server", "client"):
        print("usage: python -m peerwatch.lab.agent server|client SPEC_JSON", file=sys.stderr)
        return 2
    spec: dict[str, Any] = json.loads(args[1])
    if not die_with_parent(signal.SIGKILL, int(spec.get("parent", os.getppid()))):
        return 1  # the lab died before we asked the kernel to follow it
    emit = report
    if args[0] == "server":
        from peerwatch.lab.server import run_server

        return run_server(spec, emit)
    if spec["kind"] == "raw":
        from peerwatch.lab.rawclient import run_raw_client

        return run_raw_client(spec, emit)
    from peerwatch.lab.asyncclients import run_async_client

    return run_async_client(spec, emit)


if __name__ == "__main__":
    raise SystemExit(main())
