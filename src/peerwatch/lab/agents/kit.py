"""What every lab agent shares: reporting events to the lab, reading its commands, stall watch.

Events are JSON lines on stdout, each stamped with ``time.monotonic()``.
CLOCK_MONOTONIC is one clock for the whole machine (network namespaces do not
change it), so the lab can subtract the time it injected a fault from the time
an agent saw something, across processes and namespaces.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from peerwatch.childproc import write_json_line

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
