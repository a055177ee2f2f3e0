"""Write docs/BENCHMARKS.md and docs/benchmarks.png from the measured results.

Nothing in the report is typed by hand: every number, ratio and target verdict
comes from the JSON results the benchmarks saved.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench import targets
from bench.exporter import exporter_section
from bench.protect_cost import protect_checks, protect_section
from bench.resume_report import resume_checks, resume_section
from bench.scale_report import scale_checks, scale_section
from bench.storm import storm_section
from bench.targets import Check

TITLES = {
    "throughput": "Throughput",
    "idle": "Idle connections",
    "detection": "Detection precision",
    "accept": "Accept scaling",
    "exporter": "Exporter cost",
    "protect": "Zero-code protection and pool check",
    "inspect": "Inspect at scale",
    "scale": "Scale",
    "storm": "Reconnect storm",
    "resume": "Resumable sessions",
}


def fmt_size(size: int) -> str:
    return f"{size // 2**20} MiB" if size >= 2**20 else f"{size} B"


def checks_table(checks: list[Check]) -> list[str]:
    lines = ["| target | measured | required | verdict |", "|---|---:|---:|---|"]
    for check in checks:
        status = f"**{check.status}**" if check.status == "MISSED" else check.status
        lines.append(f"| {check.what} | {check.measured_text} | {check.target_text} | {status} |")
    return lines


def failures(result: dict[str, Any]) -> list[str]:
    """One quoted line per setup that could not be measured, with the last error line."""
    lines = []
    for label, reason in result.get("failed", {}).items():
        last = (reason.strip().splitlines() or ["?"])[-1][:300]
        lines += ["", f"> **{label}: not measured.** `{last}`"]
    return lines


def throughput_section(result: dict[str, Any]) -> list[str]:
    lines = [
        f"One connection, messages pipelined for {result['seconds_per_run']} s per run,"
        f" {result['repeats']} runs per setup interleaved round-robin. The clock stops when"
        " the server application reports it consumed every message. *msg/s* is the best run"
        " (interference from other work only lowers it), *median* the median run;"
        " *server µs/msg* and *client µs/msg* are each process's CPU time per message"
        " (median), which other load on the machine moves much less; with each process on"
        " its own core, the busier of the two bounds msg/s. CPU columns: share of one core"
        " (1.00 = saturated); *other* is what the rest of the machine used meanwhile.",
        "",
        "Every ratio below is taken run by run (run i of one setup against run i of the"
        " other, measured in the same round seconds apart) and must hold in every run: the"
        " measured value is the worst run, followed by the min / median / max of the runs.",
        "",
        "| setup | size | msg/s | median msg/s | MiB/s | server µs/msg | client µs/msg |"
        " server CPU | client CPU | other CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(result["rows"], key=lambda r: (r["size"], order_of(r["setup"]))):
        client_us = row.get("client_us_per_message")
        lines.append(
            f"| {row['setup']} | {fmt_size(row['size'])} | {row['messages_per_s']:,.0f} |"
            f" {row['median_messages_per_s']:,.0f} | {row['mib_per_s']:,.1f} |"
            f" {row['server_us_per_message']:.2f} |"
            f" {'-' if client_us is None else f'{client_us:.2f}'} | {row['server_cpu']:.2f} |"
            f" {row['client_cpu']:.2f} | {row['other_cpu']:.2f} |"
        )
    lines += failures(result)
    lines += ["", *checks_table(targets.throughput_checks(result))]
    return lines


def order_of(label: str) -> int:
    from bench.throughput import SETUPS

    labels = [s.label for s in SETUPS]
    return labels.index(label) if label in labels else len(labels)


def idle_section(result: dict[str, Any]) -> list[str]:
    lines = [
        f"Idle connections with a heartbeat every 1 s, timeout 5 s. After a warm-up of"
        f" {result['warmup_s']} s the server's CPU time (nanoseconds from"
        f" `/proc/PID/task/*/schedstat`) is read over {result.get('windows', 1)} window(s) of"
        f" {result['window_s']} s, and the median window is reported (the windows are in"
        " `bench/results/idle.json`); RSS is compared"
        " with the same server process before its first connection (the empty process)."
        " The server is pinned to CPU 0; the connections are held by"
        f" {result.get('load_processes', 1)} load-generator process(es) on CPU 1 (uvloop),"
        " which count the pings they answered: *pings/conn/s* near 1.0 proves the"
        " heartbeats ran. The websockets and peerwatch load generators are minimal raw"
        " implementations of the client side of each protocol (`bench/rawclients.py`:"
        " handshake, then a PONG for each PING, never a ping of their own), so that"
        " 10,000 peers fit in one core; the servers are the real libraries. The floor is"
        " `bench/floor.py`: one shared timer writes an 8-byte ping to every connection each"
        " second, the client echoes it. *keepalive only*: a server that holds the sockets"
        " with SO_KEEPALIVE at 1 s and does nothing in user space.",
        "",
        "| connections | setup | server CPU s/s | µs per conn-second | RSS KiB/conn |"
        " pings/conn/s | held | other CPU |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        pings = row["pings_per_conn_s"]
        lines.append(
            f"| {row['connections']:,} | {row['setup']} | {row['server_cpu']:.4f} |"
            f" {row['server_cpu'] / row['connections'] * 1e6:.1f} |"
            f" {row['rss_per_conn_kib']:.2f} | {'-' if pings is None else f'{pings:.2f}'} |"
            f" {row['held']:,} | {row.get('other_cpu', 0.0):.2f} |"
        )
    lines += failures(result)
    lines += ["", *checks_table(targets.idle_checks(result))]
    return lines


def detection_section(result: dict[str, Any]) -> list[str]:
    lines = [
        "Each peer is its own process with one `peerwatch.connect` connection to the observer"
        " (`peerwatch.serve` pinned to CPU 0, interval and timeout below; the peers and any"
        " busy load on CPU 1). Every"
        f" {result['stagger_s'] * 1000:.0f} ms one peer is frozen (it stamps its last message"
        " with CLOCK_MONOTONIC, then SIGSTOPs itself) or killed (SIGKILL). Lateness of a"
        " frozen peer's verdict, as the issues define it: *internal* = verdict time − last"
        " evidence − timeout, both times taken by the observer (`silent_for - timeout`);"
        " *external* = verdict-callback time − the peer's stamp − timeout, an upper bound"
        " from clocks outside the library, which also counts how long the frozen peer"
        " itself took to get its last message out. Killed peers: verdict-callback time −"
        " time of the kill. The targets are checked on *internal* and *killed*. The last"
        " columns say what held the observer up during the kill phase: verdicts given"
        " after the observer's own loop had stalled, how long its loop ran late (a 10 ms"
        " ticker), and how long it waited for a CPU while runnable (`schedstat`).",
        "",
        "| scenario | interval / timeout | frozen: internal p50 / p99 / max ms |"
        " frozen: external p50 / p99 / max ms | killed p50 / p99 / max ms | causes |"
        " verdicts after a local stall (worst) | observer loop lag p99 / max ms |"
        " observer waited for CPU | observer CPU | other CPU |",
        "|---|---|---|---|---|---|---|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        causes = "; ".join(
            f"{action}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
            for action, counts in row["causes"].items()
        )
        lines.append(
            f"| {row['scenario']} | {row['interval']} s / {row['timeout']} s |"
            f" {triple(row['frozen_internal_ms'])} | {triple(row['frozen_external_ms'])} |"
            f" {triple(row['killed_ms'])} | {causes} |"
            f" {row.get('verdicts_with_local_stall', 0)}"
            f" ({row.get('worst_local_stall_ms', 0.0):.0f} ms) |"
            f" {row.get('loop_lag_p99_ms', 0.0):.1f} / {row.get('loop_lag_max_ms', 0.0):.1f} |"
            f" {row.get('observer_runqueue_wait_s', 0.0):.2f} s |"
            f" {row.get('observer_cpu', 0.0):.2f} | {row.get('other_cpu', 0.0):.2f} |"
        )
    lines += failures(result)
    lines += ["", *checks_table(targets.detection_checks(result))]
    return lines


def triple(stats: dict[str, Any]) -> str:
    if not stats.get("n"):
        return "-"
    return f"{stats['p50']:.1f} / {stats['p99']:.1f} / {stats['max']:.1f} (n={stats['n']})"


def accept_section(result: dict[str, Any]) -> list[str]:
    lines = [
        str(result.get("method", "")),
        "",
        "| setup | workers | connections | conn/s | per-worker share | busiest | server CPU |"
        " load CPU | other CPU |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        shares = ", ".join(f"{s * 100:.1f} %" for s in row["shares"])
        lines.append(
            f"| {row['setup']} | {row['workers']} | {row['connections']:,} |"
            f" {row['connections_per_s']:,.0f} | {shares} | {row['max_share'] * 100:.1f} % |"
            f" {row.get('server_cpu', 0.0):.2f} | {row.get('client_cpu', 0.0):.2f} |"
            f" {row.get('other_cpu', 0.0):.2f} |"
        )
    lines += failures(result)
    lines += ["", *checks_table(targets.accept_checks(result))]
    return lines


def inspect_section(result: dict[str, Any]) -> list[str]:
    lines = [
        f"{result['sockets']:,} loopback sockets held by one process; each command run as an"
        f" operator types it, output to a file, {result['repeats']} rounds interleaved"
        " (medians). *Wall* includes the interpreter's start-up; *CPU* is the command's"
        " own user + system time, which other load on the machine barely moves. The"
        " ratios are to `ss -tni` in the same rounds.",
        "",
        "| command | wall | CPU | lines | wall / ss -tni | CPU / ss -tni |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base = {row["command"]: row for row in result["rows"]}.get("ss -tni")
    for row in result["rows"]:
        wall_ratio = targets.ratio(row["wall_s"], base["wall_s"] if base else None)
        cpu_ratio = targets.ratio(row["cpu_s"], base["cpu_s"] if base else None)
        lines.append(
            f"| `{row['command']}` | {row['wall_s']:.3f} s | {row['cpu_s']:.3f} s |"
            f" {row['lines']:,} | {_x(wall_ratio)} | {_x(cpu_ratio)} |"
        )
    table = {row["command"]: row for row in result["rows"]}.get("peerwatch inspect")
    if base and table and len(table.get("runs", [])) == len(base.get("runs", [])) > 1:
        for what in ("wall_s", "cpu_s"):
            paired = sorted(
                t[what] / s[what] for t, s in zip(table["runs"], base["runs"], strict=True)
            )
            lines += [
                "",
                f"`peerwatch inspect` / `ss -tni` {what[:-2]}, round by round (min / median /"
                f" max): {paired[0]:.1f}x / {statistics.median(paired):.1f}x /"
                f" {paired[-1]:.1f}x.",
            ]
    if result.get("private_netns"):
        lines += ["", "Measured in a network namespace of its own: no other socket counts."]
    lines += [
        "",
        f"One `--watch` refresh inside a running process (read, judge, lay out 80x50):"
        f" {result['watch_frame_s']:.3f} s wall, {result['watch_frame_cpu_s']:.3f} s CPU"
        " (medians).",
    ]
    stages = result.get("stages_cpu_s")
    if stages:
        lines += [
            "",
            "Where one table's CPU time goes, stage by stage in one process (medians): "
            + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in stages.items())
            + ".",
        ]
    lines += [
        "",
        *checks_table(targets.inspect_checks(result)),
    ]
    return lines


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


SECTIONS = {
    "throughput": throughput_section,
    "idle": idle_section,
    "detection": detection_section,
    "accept": accept_section,
    "exporter": exporter_section,
    "protect": protect_section,
    "inspect": inspect_section,
    "scale": scale_section,
    "storm": storm_section,
    "resume": resume_section,
}


CHECKS = {
    "throughput": targets.throughput_checks,
    "idle": targets.idle_checks,
    "detection": targets.detection_checks,
    "accept": targets.accept_checks,
    "exporter": targets.exporter_checks,
    "protect": protect_checks,
    "inspect": targets.inspect_checks,
    "scale": scale_checks,
    "storm": targets.storm_checks,
    "resume": resume_checks,
}

ANALYSIS = Path(__file__).resolve().parent / "analysis.md"


def summary_table(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| area | target | measured | required | verdict |", "|---|---|---:|---:|---|"]
    for name, title in TITLES.items():
        result = results.get(name)
        if result is None:
            lines.append(f"| {title} | (benchmark not run) | - | - | not measured |")
            continue
        for check in CHECKS[name](result):
            status = f"**{check.status}**" if check.status == "MISSED" else check.status
            lines.append(
                f"| {title} | {check.what} | {check.measured_text} | {check.target_text} |"
                f" {status} |"
            )
    return lines


def provenance(meta: dict[str, Any]) -> str:
    machine = ", ".join(f"{k} {v}" for k, v in meta["machine"].items())
    code = meta.get("code", {})
    text = f"Measured {meta['date']} on: {machine}."
    if code:
        text += f" Code: commit {code.get('commit', '?')}"
        if code.get("dirty"):
            text += " with uncommitted changes in src/"
        if code.get("override"):
            text += f", peerwatch imported from `{code['override']}` (not the tree)"
        text += "."
    if meta.get("quick"):
        text += " **Quick smoke run: numbers are not meaningful.**"
    return text


def write_markdown(results: dict[str, dict[str, Any]], path: Path, plot_name: str) -> None:
    lines = [
        "# peerwatch benchmarks",
        "",
        "Written by `python -m bench` (`make bench`) from the numbers it measured; the"
        " *Analysis* section is `bench/analysis.md`, written by a person after looking at"
        " the run. Every comparison is measured side by side in the same run, on"
        " 127.0.0.1, with the server and the load generator in separate processes."
        " The machine is small (2 cores) and shared: *other CPU* columns show how much"
        " of it the rest of the machine used during each measurement (2.00 = both cores"
        " busy with someone else's work); read numbers taken with a high *other* with care."
        " Every process runs with `MALLOC_MMAP_THRESHOLD_=4194304` (see `bench/procs.py`:"
        " without it, glibc's dynamic mmap threshold made asyncio's 256 KiB reads cost"
        " three extra system calls in some runs and not in others).",
        "",
        "Run it: `make bench` (everything, about 12 minutes), `make bench ARGS=idle`"
        " (one benchmark; the report keeps the other sections from their last saved"
        " results in `bench/results/`), `make bench ARGS=--quick` (a smoke run of a few"
        " seconds each, written to a temporary directory).",
        "",
        "## Targets",
        "",
        *summary_table(results),
        "",
    ]
    if ANALYSIS.exists():
        lines += ["## Analysis", "", ANALYSIS.read_text().strip(), ""]
    for name, title in TITLES.items():
        result = results.get(name)
        if result is None:
            lines += [f"## {title}", "", "Not measured yet.", ""]
            continue
        lines += [
            f"## {title}",
            "",
            provenance(result["meta"]),
            "",
            *SECTIONS[name](result),
            "",
        ]
    lines += ["## Plot", "", f"![benchmarks]({plot_name})", ""]
    path.write_text("\n".join(lines))


#: One colour per implementation (first word of a setup's label).
COLORS = {
    "bare": "tab:grey",
    "minimal": "tab:grey",
    "keepalive": "tab:green",
    "websockets": "tab:orange",
    "peerwatch": "tab:blue",
}


def write_plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    tp_ax, mib_ax, cpu_ax, rss_ax, det_ax, acc_ax = axes.flat
    if "throughput" in results:
        rows = results["throughput"]["rows"]
        for ax, size, key, unit in (
            (tp_ax, 100, "messages_per_s", "messages/s"),
            (mib_ax, 2**20, "mib_per_s", "MiB/s"),
        ):
            chosen = sorted(
                (r for r in rows if r["size"] == size), key=lambda r: order_of(r["setup"])
            )
            colors = [COLORS[r["setup"].split()[0]] for r in chosen]
            ax.barh([r["setup"] for r in chosen], [r[key] for r in chosen], color=colors)
            ax.set_xlabel(unit)
            ax.set_title(f"Throughput, {fmt_size(size)} messages (best run)")
            ax.invert_yaxis()
    if "idle" in results:
        rows = results["idle"]["rows"]
        labels = list(dict.fromkeys(r["setup"] for r in rows))
        for label in labels:
            mine = [r for r in rows if r["setup"] == label]
            counts = [r["connections"] for r in mine]
            style = {
                "marker": "o",
                "label": label,
                "color": COLORS[label.split()[0]],
                "linestyle": "--" if "uvloop" in label else "-",
            }
            cpu_ax.plot(counts, [r["server_cpu"] for r in mine], **style)
            rss_ax.plot(counts, [r["rss_per_conn_kib"] for r in mine], **style)
        cpu_ax.set_title("Idle: server CPU (s per s), 1 s heartbeats")
        cpu_ax.set_xlabel("connections")
        cpu_ax.legend(fontsize=7)
        rss_ax.set_title("Idle: RSS per connection (KiB)")
        rss_ax.set_xlabel("connections")
        rss_ax.axhline(8, color="grey", linestyle=":", linewidth=0.8)
        rss_ax.legend(fontsize=7)
    if "detection" in results:
        rows = results["detection"]["rows"]
        data, names = [], []
        for row in rows:
            short = row["scenario"].split(":")[0] + (" busy" if row["busy"] else "")
            data += [[v * 1000 for v in row["samples"]["internal"]] or [0.0]]
            names += [f"{short}\nfrozen"]
            data += [[v * 1000 for v in row["samples"]["killed"]] or [0.0]]
            names += [f"{short}\nkilled"]
        det_ax.boxplot(data, whis=(1, 99))
        det_ax.set_yscale("symlog", linthresh=1.0)
        det_ax.set_xticks(range(1, len(names) + 1), names, fontsize=7)
        det_ax.set_ylabel("ms (frozen: verdict - evidence - timeout; killed: verdict - kill)")
        det_ax.set_title("Detection lateness (whiskers p1-p99, symlog)")
    if "accept" in results:
        rows = results["accept"]["rows"]
        for index, row in enumerate(rows):
            bottom = 0.0
            for share in row["shares"]:
                height = share * row["connections_per_s"]
                acc_ax.bar(index, height, bottom=bottom, edgecolor="white")
                bottom += height
            shares = "/".join(f"{s * 100:.0f}" for s in row["shares"])
            acc_ax.text(index, bottom, f"{shares} %", ha="center", va="bottom", fontsize=7)
        acc_ax.set_xticks(
            range(len(rows)), [r["setup"] for r in rows], fontsize=7, rotation=15, ha="right"
        )
        acc_ax.set_ylabel("connections/s (stacked: each worker's share)")
        acc_ax.set_title("Accept rate, split by worker")
    for ax in axes.flat:
        if not ax.has_data():
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
