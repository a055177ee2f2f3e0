"""The lab's outputs: a rich table, the kernel timers used, JSON records and a plot.

Only the ``peerwatch lab`` command imports this module, so rich and matplotlib
stay optional for the library.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peerwatch.lab.observations import Record
from peerwatch.lab.settings import (
    LINUX_DEFAULTS,
    LabSettings,
    human_duration,
    retransmission_deadline,
)


def read_back_line(values: dict[str, str]) -> str:
    """The timers as kang's kernel reports them: proof they were applied, not assumed."""
    text = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(values.items()))
    return f"read back from kang's kernel: {text}"


def timers_lines(s: LabSettings) -> list[str]:
    """The kernel timers of the lab hosts next to what an untuned Linux host would give."""
    t, d = s.timers, LINUX_DEFAULTS
    knobs = s.tuned_knobs
    lines = [
        f"heartbeat (peerwatch, websockets): interval {s.interval:g} s, timeout {s.timeout:g} s;"
        f" peerwatch bound = timeout + 10 % + {s.bound_slack:g} s = {s.bound:.2f} s",
        f"tcp_retries2={t.tcp_retries2}: unacknowledged data ends in ETIMEDOUT after"
        f" {retransmission_deadline(t.tcp_retries2):.1f} s"
        f" (untuned {d.tcp_retries2}: {human_duration(d.retransmission_timeout)})",
        f"tcp_fin_timeout={t.tcp_fin_timeout} s: an orphaned FIN_WAIT2 socket lingers"
        f" (untuned {d.tcp_fin_timeout} s)",
        f"keepalive sysctls {t.tcp_keepalive_time}+{t.tcp_keepalive_intvl}x"
        f"{t.tcp_keepalive_probes} = {t.keepalive_bound} s to detect an idle dead peer"
        f" (untuned {d.tcp_keepalive_time}+{d.tcp_keepalive_intvl}x{d.tcp_keepalive_probes}"
        f" = {human_duration(d.keepalive_bound)})",
        f"keepalive-tuned (peerwatch.knobs_for({s.timeout:g})): {knobs.keepalive_idle}+"
        f"{knobs.keepalive_interval}x{knobs.keepalive_count} = {knobs.keepalive_bound} s;"
        f" user-timeout: TCP_USER_TIMEOUT={knobs.user_timeout_ms} ms",
    ]
    lines.append(f"kernel {platform.release()}")
    return lines


def _ok_text(record: Record) -> str:
    if record.ok is None:
        return f"[yellow]{record.why}[/yellow]" if record.why else "[dim]–[/dim]"
    return "[green]ok[/green]" if record.ok else f"[bold red]FAIL[/bold red] {record.why}"


def _detected_text(record: Record) -> str:
    if record.false_alarm:
        return "[bold yellow]false alarm[/bold yellow]"
    if record.detected:
        return "yes"
    return "no" if record.peer_dead else "no (right)"


def _seconds_text(record: Record) -> str:
    return "" if record.seconds is None else f"{record.seconds:.2f}"


def states_text(states: dict[str, list[str]]) -> str:
    parts = []
    for host in ("kang", "kodos"):
        seen = states.get(host) or []
        if seen:
            parts.append(f"{host} " + "→".join(s.replace("ESTABLISHED", "ESTAB") for s in seen))
    return "; ".join(parts)


def render_table(records: Sequence[Record], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("scenario", style="bold")
    table.add_column("strategy")
    table.add_column("detected")
    table.add_column("s", justify="right")
    table.add_column("what the application saw", overflow="fold")
    table.add_column("expected", overflow="fold")
    table.add_column("TCP states (sock_diag)", overflow="fold")
    table.add_column("ok", overflow="fold")
    previous = None
    for record in records:
        scenario = record.scenario if record.scenario != previous else ""
        if previous is not None and record.scenario != previous:
            table.add_section()
        previous = record.scenario
        expected = record.expected
        if record.untuned:
            expected += f" [dim](untuned: {record.untuned})[/dim]"
        table.add_row(
            scenario,
            record.strategy,
            _detected_text(record),
            _seconds_text(record),
            record.saw,
            expected,
            states_text(record.states),
            _ok_text(record),
        )
    return table


def summary_line(records: Sequence[Record], elapsed: float) -> str:
    judged = [r for r in records if r.ok is not None]
    failed = [r for r in judged if not r.ok]
    void = [r for r in records if r.ok is None and r.why.startswith("not judged")]
    text = (
        f"{len(records)} measurements, {len(judged)} with an expectation: "
        f"{len(judged) - len(failed)} as expected, {len(failed)} not; "
        f"{sum(r.false_alarm for r in records)} false alarm(s); {elapsed:.0f} s"
    )
    if void:
        text += f"; {len(void)} not judged because a lab agent stalled (overloaded machine)"
    return text


def write_json(
    path: Path, records: Sequence[Record], settings: LabSettings, meta: dict[str, Any]
) -> None:
    path.write_text(json.dumps(document(records, settings, meta), indent=2) + "\n")


def document(
    records: Sequence[Record], settings: LabSettings, meta: dict[str, Any]
) -> dict[str, Any]:
    """The whole run as one object: settings (used and untuned), ``meta``, every record."""
    return {
        "settings": {
            "mode": settings.mode,
            "interval": settings.interval,
            "timeout": settings.timeout,
            "bound": settings.bound,
            "timers": settings.timers.sysctls(),
            "untuned_timers": LINUX_DEFAULTS.sysctls(),
        },
        **meta,
        "records": [r.as_dict() for r in records],
    }


def write_markdown(records: Sequence[Record]) -> str:
    """The table as Markdown (for docs/LAB.md)."""
    lines = [
        "| scenario | strategy | detected | s | what the application saw | expected"
        " | TCP states | ok |",
        "|---|---|---|---:|---|---|---|---|",
    ]
    for r in records:
        detected = "false alarm" if r.false_alarm else ("yes" if r.detected else "no")
        ok = (r.why or "–") if r.ok is None else ("ok" if r.ok else f"FAIL: {r.why}")
        expected = r.expected + (f" (untuned: {r.untuned})" if r.untuned else "")
        cells = [
            r.scenario,
            r.strategy,
            detected,
            _seconds_text(r),
            r.saw,
            expected,
            states_text(r.states),
            ok,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_plot(path: Path, records: Sequence[Record], settings: LabSettings) -> None:
    """Detection time per scenario and strategy, log scale, with the configured bound drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r.scenario for r in records))
    strategies = list(dict.fromkeys(r.strategy for r in records))
    width = 0.8 / max(1, len(strategies))
    fig, ax = plt.subplots(figsize=(max(8.0, 1.3 * len(scenarios) + 3), 5.5))
    floor = 0.001
    for i, strategy in enumerate(strategies):
        xs, ys, alarms, hatched_x = [], [], [], []
        for j, scenario in enumerate(scenarios):
            match = [r for r in records if r.scenario == scenario and r.strategy == strategy]
            if not match:
                continue
            record = match[0]
            x = j - 0.4 + width * (i + 0.5)
            if record.seconds is not None:
                xs.append(x)
                ys.append(max(floor * 2, record.seconds))
                alarms.append(record.false_alarm)
            elif record.peer_dead:
                hatched_x.append(x)
        bars = ax.bar(xs, ys, width, label=strategy)
        for bar, alarm in zip(bars.patches, alarms, strict=True):
            if alarm:
                bar.set_hatch("xx")
                bar.set_edgecolor("black")
        colour = bars.patches[0].get_facecolor() if bars.patches else None
        for x in hatched_x:  # never detected: a marker at the top
            ax.plot([x], [600], marker="v", color=colour, markersize=5)
    ax.axhline(settings.bound, color="red", linestyle="--", linewidth=1)
    ax.text(
        -0.45,
        settings.bound * 1.12,
        f"peerwatch bound {settings.bound:.2f} s",
        color="red",
        ha="left",
        fontsize=8,
    )
    ax.set_yscale("log")
    ax.set_ylim(floor, 2000)
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels(scenarios, rotation=30, ha="right")
    ax.set_ylabel("seconds from fault to first signal (log)")
    ax.set_title(
        f"peerwatch lab ({settings.mode}): fault to first signal; ▼ never detected"
        " (peer dead); hatched: false alarm (peer alive)"
    )
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
