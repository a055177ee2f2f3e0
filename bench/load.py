"""Several load-generator processes opening connections together, as one.

One Python process opening and holding 10,000 connections could itself become
the bottleneck (of an accept-rate measurement) or distort a CPU measurement, so
the connections are split over several ``bench.idle_client`` processes. They
connect at the parent's ``go`` and stamp their start and end with
CLOCK_MONOTONIC, which all processes of a host share: the flock's wall time is
last end − first start.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from bench.procs import Child, ChildFailed


class Flock:
    """``processes`` idle clients of ``kind`` that together hold ``count`` connections."""

    def __init__(
        self,
        kind: str,
        port: int,
        count: int,
        processes: int,
        *,
        cpu: int | None = None,
        extra: Sequence[str] = (),
        max_seconds: float = 900,
    ) -> None:
        processes = max(1, min(processes, count))
        shares = [count // processes + (i < count % processes) for i in range(processes)]
        self.count = count
        self.kids: list[Child] = []
        try:
            for share in shares:
                args = [kind, str(port), str(share), "--go", "--max-seconds", str(max_seconds)]
                self.kids.append(Child("bench.idle_client", [*args, *extra], cpu=cpu))
            for kid in self.kids:
                kid.read_event(60, "armed")
        except BaseException:
            self.stop()
            raise

    @property
    def pids(self) -> list[int]:
        return [kid.pid for kid in self.kids]

    def open(self, timeout: float = 300) -> dict[str, float]:
        """Let every process connect; returns the flock's ``seconds`` and ``connections``."""
        for kid in self.kids:
            kid.command("go")
        deadline = time.monotonic() + timeout
        ready = [
            kid.read_event(max(1.0, deadline - time.monotonic()), "ready") for kid in self.kids
        ]
        held = sum(int(r["connections"]) for r in ready)
        if held != self.count:
            raise ChildFailed(f"load generators opened {held} of {self.count} connections")
        seconds = max(r["at"] for r in ready) - min(r["started"] for r in ready)
        return {"seconds": seconds, "connections": held}

    def pings(self) -> tuple[int, float]:
        """Pings answered so far by all processes, and the time of asking."""
        total = 0
        at = time.monotonic()
        for kid in self.kids:
            stats: dict[str, Any] = kid.ask("stats", "stats")
            total += int(stats["pings"])
        return total, at

    def stop(self) -> None:
        for kid in reversed(self.kids):
            kid.stop()

    def __enter__(self) -> Flock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
