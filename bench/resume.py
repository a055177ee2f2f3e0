"""Resumable sessions: what resumability costs a connection, and what a resume costs.

``python -m bench resume`` (results in docs/BENCHMARKS.md, "Resumable sessions").

1. Throughput, side by side in one run: one connection, messages pipelined
   with at most 1,024 unacknowledged (``bench.resume_client tp``), the clock
   stopped when the server application reports it took every one. Three
   setups: a plain acknowledged peerwatch connection, a resumable one with the
   server's in-process store, and a resumable one with the Redis store (a
   redis-server on loopback, written through: one round trip per message).
   Rounds are interleaved (plain, memory, redis, plain, ...), and the ratio
   resumable / plain is taken within each round, so a drift of the shared
   machine hits both sides of a ratio alike; min, median and max of the rounds.
   Beside msg/s, the CPU both ends spent per message (``cpu_ratio``: plain's
   over resumable's, the throughput share when CPU-bound), which other load on
   the machine barely moves.

2. Resume cost, in the lab (two network namespaces and a switch,
   ``peerwatch.lab.hosts``), without and with netem delay on the switch ports:
   the client enqueues R messages while its cable is out, its connection is
   declared dead, the cable goes back, it reconnects and replays them. The
   server measures, on its own clock, from the moment the resumed connection
   carries the session (its ``Resumed`` event) to the moment its application
   took the last replayed message. That is one round trip (its RESUME goes to
   the client, the replay comes back) plus the replayed bytes on a new TCP
   connection (slow start). The baseline, measured in the same run on the same
   hosts: a brand-new session whose client enqueues the same R messages at once
   (from the server's handler start to the last message taken), which is one
   round trip plus the same bytes on a new connection, with no session to
   restore. The target is that a resume costs no more than that.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench.procs import Child, ChildFailed, CpuWindow, children

SERVERS = {"plain": "plain", "resumable, in-process store": "memory"}
REDIS = "resumable, Redis store"
WINDOW = 1024  # unacknowledged messages at most, as bench.throughput's "acknowledged"


@dataclass(frozen=True)
class CostCase:
    label: str
    delay_ms: float  # added by the relay in each direction (RTT + 2 x this)
    replays: int
    size: int


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


# ------------------------------------------------------------------ throughput


def one_run(server: Child, kind: str, port: int, size: int, seconds: float) -> dict[str, Any]:
    client_kind = "plain" if kind == "plain" else "resumable"
    args = ["tp", client_kind, "127.0.0.1", str(port), "--size", str(size)]
    args += ["--seconds", str(seconds), "--window", str(WINDOW)]
    with Child("bench.resume_client", args, cpu=1) as client:
        client.read_event(30, "start")
        window = CpuWindow(server.pid, client.pid)
        result = client.read_event(seconds * 20 + 60, "result")
        server_cpu, client_cpu = window.stop()
    if result["consumed"] != result["sent"]:
        raise ChildFailed(f"{kind}: sent {result['sent']} but consumed {result['consumed']}")
    return {
        "messages_per_s": result["consumed"] / result["seconds"],
        "server_cpu": server_cpu,
        "client_cpu": client_cpu,
        "other_cpu": window.other,
        "messages": result["consumed"],
        # CPU per message of both ends: what other load on the machine barely moves
        "cpu_us_per_message": sum(window.used) / result["consumed"] * 1e6,
    }


@contextlib.contextmanager
def throughput_servers(log: Any) -> Iterator[tuple[dict[str, tuple[Child, int]], dict[str, str]]]:
    """Each setup's server child (and a redis-server for the Redis one), stopped after."""
    servers: dict[str, tuple[Child, int]] = {}
    failed: dict[str, str] = {}
    redis = None
    kinds = dict(SERVERS)
    try:
        try:
            from peerwatch.testing.servers import start_redis

            redis = start_redis()
            kinds[REDIS] = "redis"
        except Exception as exc:  # the other rows are still worth measuring
            failed[REDIS] = f"no redis-server: {exc}"
        for label, kind in kinds.items():
            args = [kind] + ([f"--redis=redis://127.0.0.1:{redis.port}/0"] if redis else [])
            child = Child("bench.resume_server", args, cpu=0)
            try:
                servers[label] = (child, int(child.read_event(30, "ready")["port"]))
            except ChildFailed as exc:
                child.stop()
                failed[label] = str(exc)[-600:]
                log(f"  resume {label}: server FAILED {str(exc)[-300:]}")
        yield servers, failed
    finally:
        with children(*(child for child, _ in servers.values())):
            pass
        if redis is not None:
            redis.stop()


def run_throughput_part(quick: bool, log: Any) -> dict[str, Any]:
    seconds = 0.3 if quick else 2.0
    rounds = 1 if quick else 5
    sizes = [100] if quick else [100, 1024 * 1024]
    # (label, size) -> round -> run; a run that failed is missing from its round
    runs: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
    errors: dict[str, str] = {}
    with throughput_servers(log) as (servers, failed):
        for round_ in range(rounds):
            for size in sizes:
                for label, (server, port) in servers.items():
                    kind = "plain" if label == "plain" else "resumable"
                    try:
                        run = one_run(server, kind, port, size, seconds)
                    except ChildFailed as exc:  # one disturbed run must not void the setup
                        errors[f"{label}, {size} B, round {round_ + 1}"] = str(exc)[-600:]
                        log(f"  resume {label}: FAILED {str(exc)[-300:]}")
                        continue
                    runs.setdefault((label, size), {})[round_] = run
                    log(
                        f"  resume tp {label:30s} {size:>8d} B  round {round_ + 1}:"
                        f" {run['messages_per_s']:>9.0f} msg/s  cpu server {run['server_cpu']:.2f}"
                        f" client {run['client_cpu']:.2f} other {run['other_cpu']:.2f}"
                    )
    rows = []
    for (label, size), by_round in runs.items():
        measured = list(by_round.values())
        row: dict[str, Any] = {
            "setup": label,
            "size": size,
            "messages_per_s": spread([r["messages_per_s"] for r in measured]),
            "other_cpu": statistics.median(r["other_cpu"] for r in measured),
            "cpu_us_per_message": spread([r["cpu_us_per_message"] for r in measured]),
            "runs": measured,
        }
        plain = runs.get(("plain", size), {})
        pairs = [(run, plain[n]) for n, run in by_round.items() if n in plain]
        if label != "plain" and pairs:  # within a round only: side by side
            row["ratio"] = spread([r["messages_per_s"] / p["messages_per_s"] for r, p in pairs])
            row["cpu_ratio"] = spread(
                [p["cpu_us_per_message"] / r["cpu_us_per_message"] for r, p in pairs]
            )
        rows.append(row)
    return {
        "seconds_per_run": seconds,
        "rounds": rounds,
        "rows": rows,
        "failed": failed,
        "run_errors": errors,
    }


# ------------------------------------------------------------------ resume cost


def one_resume(case: CostCase) -> dict[str, Any]:
    server = Child("bench.resume_server", ["memory", "--fast"], cpu=0)
    with children(server):
        port = str(server.read_event(30, "ready")["port"])
        relay = Child("bench.resume_relay", [port, "--delay-ms", str(case.delay_ms)])
        with children(relay):
            via = str(relay.read_event(30, "ready")["port"])
            args = ["cost", "127.0.0.1", via, "--size", str(case.size)]
            client = Child("bench.resume_client", [*args, "--replays", str(case.replays)], cpu=1)
            with children(client):
                fresh = client.read_event(60, "fresh")
                connected = client.read_event(60, "connected")
                relay.ask("hold", "done")
                client.command("go")
                client.read_event(30, "enqueued")
                relay.ask("cut", "done")
                client.read_event(30, "lost")
                resumed = client.read_event(60, "resumed")
                report = client.read_event(60, "report")
    resume_s = report["last_replay_at"] - report["resumed_at"][-1]
    fresh_s = fresh["last_replay_at"] - fresh["attached_at"]
    rtt = connected["rtt"]
    return {
        "rtt_ms": rtt * 1000,
        "resume_ms": resume_s * 1000,
        "fresh_ms": fresh_s * 1000,
        "ratio": resume_s / fresh_s,
        "resume_rtts": resume_s / rtt,
        "replayed": resumed["replayed"],
        "replayed_bytes": resumed["replayed"] * case.size,
        "outage_ms": resumed["outage"] * 1000,
        "taken": report["replays"],
    }


def run_cost_part(quick: bool, log: Any) -> dict[str, Any]:
    cases = [CostCase("loopback", 0.0, 10, 1024), CostCase("20 ms RTT", 10.0, 10, 1024)]
    if not quick:
        cases += [CostCase("20 ms RTT, 256 KiB replayed", 10.0, 256, 1024)]
    repeats = 1 if quick else 5
    rows, failed = [], {}
    for case in cases:
        runs = []
        try:
            for repeat in range(repeats):
                run = one_resume(case)
                runs.append(run)
                log(
                    f"  resume cost {case.label:30s} run {repeat + 1}: rtt {run['rtt_ms']:.2f} ms,"
                    f" resume {run['resume_ms']:.2f} ms, new session {run['fresh_ms']:.2f} ms,"
                    f" replayed {run['replayed']}, outage {run['outage_ms']:.1f} ms"
                )
        except ChildFailed as exc:
            failed[case.label] = str(exc)[-600:]
            log(f"  resume cost {case.label}: FAILED {str(exc)[-300:]}")
            continue
        keys = ("rtt_ms", "resume_ms", "fresh_ms", "ratio", "resume_rtts", "outage_ms")
        rows.append(
            {
                "case": case.label,
                "delay_ms": case.delay_ms,
                "replays": case.replays,
                "size": case.size,
                **{key: spread([r[key] for r in runs]) for key in keys},
                "replayed": [r["replayed"] for r in runs],
                "runs": runs,
            }
        )
    return {"repeats": repeats, "rows": rows, "failed": failed}


def run_resume(quick: bool = False, log: Any = print) -> dict[str, Any]:
    started = time.monotonic()
    throughput = run_throughput_part(quick, log)
    cost = run_cost_part(quick, log)
    return {
        "throughput": throughput,
        "cost": cost,
        "failed": {**throughput["failed"], **cost["failed"]},
        "seconds": time.monotonic() - started,
    }
