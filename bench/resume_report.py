"""The "Resumable sessions" section of docs/BENCHMARKS.md and its targets, from resume.json."""

from __future__ import annotations

from typing import Any

from bench.targets import Check

#: Issue 12: a resumable connection keeps at least this share of a plain acknowledged one's rate.
THROUGHPUT_TARGET = 0.8
#: Issue 12: a resume costs at most one round trip plus the replayed bytes, i.e. no more than a
#: new connection delivering the same bytes (measured beside it): this ratio at most.
RESUME_TARGET = 1.0


def _size(size: int) -> str:
    return f"{size // 2**20} MiB" if size >= 2**20 else f"{size} B"


def _triple(stats: dict[str, float], fmt: str = "{:,.0f}") -> str:
    return " / ".join(fmt.format(stats[k]) for k in ("min", "median", "max"))


def resume_checks(result: dict[str, Any]) -> list[Check]:
    checks = []
    for row in result["throughput"]["rows"]:
        if row["setup"] == "resumable, in-process store" and "ratio" in row:
            checks.append(
                Check(
                    f"resumable / plain acknowledged, {_size(row['size'])} (median of rounds)",
                    row["ratio"]["median"],
                    THROUGHPUT_TARGET,
                    higher_is_better=True,
                )
            )
            # the same share from CPU per message, which other load on the machine barely
            # moves: the rate ratio of a shared 2-core machine swings with its neighbours
            checks.append(
                Check(
                    f"plain / resumable CPU per message, {_size(row['size'])} (median of rounds)",
                    row["cpu_ratio"]["median"],
                    THROUGHPUT_TARGET,
                    higher_is_better=True,
                )
            )
    one = result["throughput"].get("one_loop", {})
    if "ratio" in one:
        checks.append(
            Check(
                "resumable / plain acknowledged, 100 B, server and client in one process (median)",
                one["ratio"]["median"],
                THROUGHPUT_TARGET,
                higher_is_better=True,
            )
        )
    for row in result["cost"]["rows"]:
        checks.append(
            Check(
                f"resume / new connection with the same bytes, {row['case']} (median)",
                row["ratio"]["median"],
                RESUME_TARGET,
                higher_is_better=False,
            )
        )
    if not checks:
        checks.append(Check("resumable sessions", None, THROUGHPUT_TARGET, True))
    return checks


def resume_section(result: dict[str, Any]) -> list[str]:
    from bench.report import checks_table, failures

    tp = result["throughput"]
    lines = [
        f"One connection, messages pipelined for {tp['seconds_per_run']} s per run with at most"
        " 1,024 unacknowledged (every message acknowledged by the server application, as"
        f" *peerwatch acknowledged* above), {tp['rounds']} rounds, setups interleaved within"
        " each round. *ratio* is resumable / plain within the same round; min / median / max"
        " over the rounds. *CPU µs/msg*: CPU time of the server and client processes per"
        " message; *CPU ratio*: plain's over resumable's within a round (the share of a plain"
        " connection's rate a resumable one keeps when CPU-bound), which other load on the"
        " machine barely moves. The Redis store writes every message and every take through to a"
        " redis-server on loopback before it has an effect (`docs/SESSIONS.md`).",
        "",
        "| setup | size | msg/s (min / median / max) | ratio to plain | CPU µs/msg (median)"
        " | CPU ratio to plain | other CPU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(tp["rows"], key=lambda r: (r["size"], r["setup"] != "plain", r["setup"])):
        ratio = _triple(row["ratio"], "{:.2f}") if "ratio" in row else "1"
        cpu_ratio = _triple(row["cpu_ratio"], "{:.2f}") if "cpu_ratio" in row else "1"
        lines.append(
            f"| {row['setup']} | {_size(row['size'])} | {_triple(row['messages_per_s'])} |"
            f" {ratio} | {row['cpu_us_per_message']['median']:,.1f} | {cpu_ratio} |"
            f" {row['other_cpu']:.2f} |"
        )
    one = tp.get("one_loop", {})
    if "ratio" in one:
        lines += [
            "",
            f"The same pair, {one['size']} B, with server and client sharing one process and"
            f" event loop, alternating, {len(one['rounds'])} rounds of {one['messages']:,}"
            " messages (no scheduling between processes, so only what a message costs):"
            f" plain {_triple(one['plain'])} msg/s, resumable {_triple(one['resumable'])}"
            f" msg/s; ratio {_triple(one['ratio'], '{:.2f}')}, CPU ratio"
            f" {_triple(one['cpu_ratio'], '{:.2f}')} (min / median / max).",
        ]
    for what, error in tp.get("run_errors", {}).items():
        last = (error.strip().splitlines() or ["?"])[-1][:300]
        lines += ["", f"> **{what}: run failed, left out (its round has no ratio).** `{last}`"]
    cost = result["cost"]
    lines += [
        "",
        "Resume cost: the client enqueues the messages while a relay between it and the server"
        " holds them, then the relay cuts both connections with RST; the client reconnects and"
        " replays them. Measured by the server on its own clock: from the moment the resumed"
        " connection carries the session (its `Resumed` event) to the moment its application"
        " took the last replayed message. Beside it, in the same run: a new session that"
        " enqueues the same messages at once (from its first connection carrying it to the"
        " last message taken): one round trip plus the same bytes on a new connection. The"
        " 20 ms RTT comes from the relay delaying each direction by 10 ms (this kernel has no"
        " netem). *RTT*: median time of an acknowledged `send()` of a small message."
        f" {cost.get('repeats', '?')} runs each; min / median / max.",
        "",
        "| case | replayed | RTT ms | resume ms | new session ms | resume / new | resume in RTTs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in cost["rows"]:
        replayed = row["replays"] * row["size"]
        lines.append(
            f"| {row['case']} | {row['replays']} x {_size(row['size'])} ({replayed // 1024} KiB) |"
            f" {_triple(row['rtt_ms'], '{:.2f}')} | {_triple(row['resume_ms'], '{:.2f}')} |"
            f" {_triple(row['fresh_ms'], '{:.2f}')} | {_triple(row['ratio'], '{:.2f}')} |"
            f" {_triple(row['resume_rtts'], '{:.2f}')} |"
        )
    lines += failures(result)
    lines += ["", *checks_table(resume_checks(result))]
    return lines
