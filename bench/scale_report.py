"""The "Scale" section of docs/BENCHMARKS.md, its targets, and docs/scale.png.

Everything here is computed from ``bench/results/scale.json``; a target whose
number is missing (the run could not hold that many connections) says "not
measured", never met.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.scale import BATCHED
from bench.targets import Check

#: Written by a person after looking at a run (the numbers above are not).
ANALYSIS = Path(__file__).resolve().parent / "scale_analysis.md"
TARGET_CPU = 1.2  # x the floor with the same loop
TARGET_RSS_KIB = 4.0  # per connection above the empty process
TARGET_LATE_MS = 50.0  # verdict after timeout + last evidence (frozen) or after the kill


def row_for(result: dict[str, Any], setup: str, count: int) -> dict[str, Any] | None:
    for row in result["rows"]:
        if row["setup"] == setup and row["connections"] == count:
            return row
    return None


def largest(result: dict[str, Any], setup: str) -> int | None:
    counts = [r["connections"] for r in result["rows"] if r["setup"] == setup]
    return max(counts, default=None)


def fmt_spread(spread: dict[str, float] | None, digits: int = 2) -> str:
    if not spread:
        return "-"
    return f"{spread['median']:.{digits}f} ({spread['min']:.{digits}f}-{spread['max']:.{digits}f})"


def scale_checks(result: dict[str, Any]) -> list[Check]:
    top = largest(result, "peerwatch")
    # the counts, plus the largest this machine could hold when that is less
    counts = [100_000] if top in (None, 100_000) else [top, 100_000]
    checks = []
    wanted = [(setup, n) for setup in ("peerwatch", BATCHED) for n in counts] + [
        (setup, n)
        for setup in ("peerwatch + uvloop", f"{BATCHED} + uvloop")
        for n in (10_000, 100_000)
    ]
    stable = sorted(
        {(r["setup"], r["connections"]) for r in result["rows"] if "run_ratios" in r},
        key=lambda pair: (pair[1], pair[0]),
    )
    for setup, count in stable:  # "in every one of five consecutive runs, not most"
        row = row_for(result, setup, count)
        assert row is not None
        runs = len(row["run_ratios"])
        what = f"{setup} idle CPU / floor, {count:,} conns, worst of {runs} consecutive runs"
        checks.append(Check(what, max(row["run_ratios"]), TARGET_CPU, False))
    for setup, count in wanted:
        row = row_for(result, setup, count)
        if (setup, count) in stable:
            continue
        ratio = row.get("cpu_ratio", {}).get("median") if row else None
        what = f"{setup} idle CPU / floor, {count:,} conns (median window)"
        checks.append(Check(what, ratio, TARGET_CPU, False))
    for setup, count in ((setup, n) for setup in ("peerwatch", BATCHED) for n in counts):
        row = row_for(result, setup, count)
        checks.append(
            Check(
                f"{setup} RSS per connection, {count:,} conns",
                row["rss_per_conn_kib"] if row else None,
                TARGET_RSS_KIB,
                False,
                " KiB",
            )
        )
    detecting = [r for r in result["rows"] if "detection" in r]
    for row in detecting or [{"setup": "peerwatch"}]:
        detection = row.get("detection")
        victims = (
            f"{detection['victims']:,} of {detection['victims'] * 2 + detection['others']:,}"
            if detection
            else "1,000 of 100,000"
        )
        for key, what in (("frozen_ms", "frozen"), ("killed_ms", "killed")):
            p99 = detection[key].get("p99") if detection else None
            checks.append(
                Check(
                    f"{row['setup']}: verdict p99 late, {victims} {what} at once",
                    p99,
                    TARGET_LATE_MS,
                    False,
                    " ms",
                )
            )
        checks.append(
            Check(
                f"{row['setup']}: false verdicts among the other connections",
                float(detection["false_verdicts"]) if detection else None,
                0,
                False,
                "",
            )
        )
    return checks


def scale_section(result: dict[str, Any]) -> list[str]:
    lines = [
        f"One server process (pinned to one core) holds N idle connections with a heartbeat"
        f" every {result['interval_s']:g} s and a {result['timeout_s']:g} s timeout; load"
        " generators on the other core open them from several loopback source addresses"
        " (127.0.0.10 and up; 127.0.0.1's ports are left to everyone else). Server CPU is"
        f" read over {result['windows']} windows of {result['window_s']:g} s per run."
        " *ratio* is peerwatch's CPU over the floor's with the same event loop: where"
        " several consecutive runs were made (a fresh server each, the setups interleaved),"
        " one ratio per run (the median of its windows) and median (min-max) over the runs;"
        " with one run, median (min-max) over its windows. CPU and RSS are medians over the"
        " runs. RSS is above the same process before its first connection."
        " `python -m bench scale` (about 45 minutes).",
        "",
        "| setup | N | runs | server CPU (s/s) | CPU µs/s per conn | ratio to floor |"
        " ratio per run | RSS KiB/conn | heartbeats/conn/s | opened in | other CPU |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in sorted(result["rows"], key=lambda r: (r["connections"], r["setup"])):
        count = row["connections"]
        per_run = ", ".join(f"{r:.2f}" for r in row.get("run_ratios", [])) or "-"
        lines.append(
            f"| {row['setup']} | {count:,} | {len(row.get('runs', [row]))} |"
            f" {row['server_cpu']:.4f} | {row['server_cpu'] / count * 1e6:.2f} |"
            f" {fmt_spread(row.get('cpu_ratio'))} | {per_run} |"
            f" {row['rss_per_conn_kib']:.2f} | {row['pings_per_conn_s']:.3f} |"
            f" {row['open_seconds']:.1f} s | {row['other_cpu']:.2f} |"
        )
    for detection in (r for r in result["rows"] if "detection" in r):
        found = detection["detection"]
        lines += [
            "",
            f"**Detection at scale** ({detection['setup']}, {detection['connections']:,}"
            f" connections): {found['victims']:,} peers frozen at once (a last PING on each,"
            f" then SIGSTOP) and, a few seconds later, {found['victims']:,} killed at once"
            " (SIGKILL). Lateness in ms: frozen = verdict seen by the handler − that"
            " connection's last PING written − timeout; *internal* = peerwatch's own"
            " `silent_for` − timeout; killed = verdict − SIGKILL sent (and − the killed"
            " process reaped).",
            "",
            "| | n | p50 | p99 | max |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, label in (
            ("frozen_ms", "frozen"),
            ("internal_ms", "frozen (internal)"),
            ("read_ms", "frozen: last PING read after written"),
            ("handler_ms", "frozen: handler woken after the verdict"),
            ("killed_ms", "killed"),
            ("killed_after_exit_ms", "killed, after exit"),
        ):
            s = found.get(key, {})
            if s.get("n"):
                lines.append(
                    f"| {label} | {s['n']} | {s['p50']:.1f} | {s['p99']:.1f} | {s['max']:.1f} |"
                )
        lines += [
            "",
            f"False verdicts among the other {found['others']:,}: {found['false_verdicts']};"
            f" still held afterwards: {found['others_still_held']:,}; verdicts with an"
            f" unexpected cause: {len(found['wrong_cause'])}.",
        ]
    for label, reason in result.get("failed", {}).items():
        last = (reason.strip().splitlines() or ["?"])[-1][:300]
        lines += ["", f"> **{label}: not measured.** `{last}`"]
    lines += ["", "![scale](scale.png)"]
    if ANALYSIS.exists():
        lines += ["", "### Scale: analysis", "", ANALYSIS.read_text().strip()]
    return lines


def write_scale_plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cpu_ax, rss_ax) = plt.subplots(1, 2, figsize=(13, 5))
    colors = {"minimal": "tab:grey", "peerwatch": "tab:blue"}
    for label in dict.fromkeys(r["setup"] for r in result["rows"]):
        mine = sorted(
            (r for r in result["rows"] if r["setup"] == label), key=lambda r: r["connections"]
        )
        counts = [r["connections"] for r in mine]
        style = {
            "marker": "o",
            "label": label,
            "color": colors.get(label.split()[0], "tab:green"),
            "linestyle": "--" if "uvloop" in label else "-",
        }
        cpu_ax.plot(counts, [r["server_cpu"] / r["connections"] * 1e6 for r in mine], **style)
        rss_ax.plot(counts, [r["rss_per_conn_kib"] for r in mine], **style)
    interval = result["interval_s"]
    cpu_ax.set_title(f"Server CPU per connection ({interval:g} s heartbeats): flat = linear")
    cpu_ax.set_ylabel("CPU µs per second per connection")
    rss_ax.set_title("RSS per connection above the empty process")
    rss_ax.set_ylabel("KiB")
    rss_ax.axhline(TARGET_RSS_KIB, color="red", linestyle=":", linewidth=0.8, label="target")
    for ax in (cpu_ax, rss_ax):
        ax.set_xscale("log")
        ax.set_xlabel("connections held (N)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
