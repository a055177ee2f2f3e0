"""What one strategy's client saw in one scenario, and the row it becomes in the report.

Agents report raw events (``read``, ``write``, ``timeout``, ``closed``,
``verdict``, ``check``) stamped with CLOCK_MONOTONIC; here they are put on the
scenario's time axis (0 = the fault) and reduced to the questions the report
answers: did the application learn that the connection is over, when, and
what exactly did it see.

A resumable session (issue 12) adds ``lost`` (an underlying connection died:
the application was told, so it counts as a detection, but the session goes
on) and ``resumed``; only its ``verdict`` (SESSION_LOST) ends it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: errno names that mean "the peer answered with RST".
RESET_NAMES = frozenset({"ECONNRESET", "EPIPE", "ECONNABORTED"})


@dataclass(frozen=True)
class Event:
    t: float  # seconds after the fault (negative: before it)
    kind: str
    fields: dict[str, Any]

    @property
    def saw(self) -> str:
        return str(self.fields.get("saw", ""))


@dataclass
class Observation:
    """The events of one client agent during one scenario."""

    strategy: str
    events: list[Event] = field(default_factory=list)
    error: str | None = None  # the client could not even be set up

    def add(self, t: float, record: dict[str, Any]) -> None:
        kind = str(record.get("ev", "?"))
        fields = {k: v for k, v in record.items() if k not in ("t", "ev")}
        if kind in ("verdict", "lost", "resumed") and isinstance(record.get("at"), (int, float)):
            # peerwatch's own decision time, on the same clock as ``t``
            t = t + float(record["at"]) - float(record["t"])
        self.events.append(Event(t, kind, fields))
        self.events.sort(key=lambda e: e.t)

    # ----------------------------------------------------------- reductions

    def signals(self) -> list[Event]:
        """Events where the application was told the connection is (or may be) over."""
        out = []
        for event in self.events:
            if event.t < 0:
                continue
            if event.kind == "read" and event.saw and "note" not in event.fields:
                out.append(event)
            elif event.kind == "write" and event.fields.get("ok") is False:
                if event.saw not in ("already dead", "EAGAIN"):
                    out.append(event)
            elif event.kind in ("timeout", "closed", "verdict", "lost"):
                out.append(event)
        return out

    @property
    def first(self) -> Event | None:
        signals = self.signals()
        return signals[0] if signals else None

    @property
    def last(self) -> Event | None:
        signals = self.signals()
        return signals[-1] if signals else None

    @property
    def detected(self) -> bool:
        return self.first is not None

    @property
    def seconds(self) -> float | None:
        first = self.first
        return None if first is None else first.t

    def over_at(self) -> float | None:
        """When the connection was finished for the application (an error, not just b'')."""
        for event in self.signals():
            if event.saw != "b''" and event.kind != "lost":
                return event.t
        return None

    def resumed(self) -> list[Event]:
        """When a resumable session carried on after an outage (none for a plain client)."""
        return [e for e in self.events if e.kind == "resumed" and e.t >= 0]

    def writes(self) -> list[Event]:
        return [e for e in self.events if e.kind == "write" and e.t >= 0]

    def wrote_ok_before(self, t: float) -> bool:
        return any(e.fields.get("ok") is True and e.t <= t for e in self.writes())

    @property
    def check_ok(self) -> bool | None:
        checks = [e for e in self.events if e.kind == "check" and e.t >= 0]
        if not checks:
            return None
        return all(e.fields.get("ok") is True for e in checks)

    def saw_text(self) -> str:
        """What the application saw, in order: ``b'' · write ok 4.5 s · ECONNRESET``."""
        parts = []
        signals = self.signals()
        for event in self.events:
            if event.t < 0:
                continue
            if event.kind == "write" and event.fields.get("ok") is True:
                parts.append(f"write ok {event.t:.1f} s")
            elif event.kind == "resumed":
                outage = float(event.fields.get("outage") or 0.0)
                replayed = event.fields.get("replayed", 0)
                parts.append(f"resumed {event.t:.1f} s ({outage:.1f} s out, {replayed} replayed)")
            elif event.kind == "check" and "echoed" in event.fields:
                ok = event.fields.get("ok") is True
                echoed = event.fields.get("echoed")
                parts.append(f"{echoed} echoes once, in order" if ok else "echoes wrong")
            elif event.kind == "verdict" and "accounted" in event.fields:
                acked, handed = event.fields.get("acked"), event.fields.get("undelivered")
                parts.append(f"{event.saw}, {acked} acked + {handed} handed back")
            elif event in signals:
                parts.append(event.saw or event.kind)
        if self.error:
            parts.append(f"setup failed: {self.error}")
        return " · ".join(_squash(parts)) or "nothing"


def _squash(parts: list[str]) -> list[str]:
    """Collapse a run of writes (one a second under loss) into ``write ok 1.0 s ×9``."""
    runs: list[list[Any]] = []
    for part in parts:
        if part.startswith("write ok") and runs and runs[-1][0].startswith("write ok"):
            runs[-1][1] += 1
        else:
            runs.append([part, 1])
    return [text if count == 1 else f"{text} ×{count}" for text, count in runs]


@dataclass(frozen=True)
class Record:
    """One row of the report: a (scenario, strategy) pair, measured and judged."""

    scenario: str
    strategy: str
    peer_dead: bool  # whether a perfect detector would report the peer dead
    detected: bool
    seconds: float | None  # from the fault to the first signal
    saw: str
    expected: str
    ok: bool | None  # None: no claim is made for this pair, it is measured only
    why: str  # when not ok: what did not match
    states: dict[str, list[str]]  # host -> TCP states the kernel reported, in order
    untuned: str | None = None  # what an untuned Linux host would take, where timers matter

    @property
    def false_alarm(self) -> bool:
        return self.detected and not self.peer_dead

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "strategy": self.strategy,
            "peer_dead": self.peer_dead,
            "detected": self.detected,
            "false_alarm": self.false_alarm,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "saw": self.saw,
            "expected": self.expected,
            "states": self.states,
            "ok": self.ok,
            "why": self.why,
            "untuned": self.untuned,
        }
