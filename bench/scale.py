"""Scale: 1,000 to 100,000 idle connections in one server process, against the floor.

For each connection count and each server (peerwatch as its peers ping it,
peerwatch with ``batch_pings`` pinging them, and the minimal ping/pong floor of
``bench/floor.py``, on asyncio and on uvloop; heartbeat interval 10 s,
timeout 30 s) the server runs pinned to CPU 0 and load generators on CPU 1 open
the connections from several loopback source addresses (``bench/scale_clients``).
Then the server's CPU is read over ``windows`` windows of one heartbeat interval
each and its RSS compared with the empty process. At the counts in
``Plan.stable`` every setup is measured in several consecutive runs (a fresh
server each, the setups interleaved): the ratio to the floor is then one number
per run (the median of its window pairs) and shown as min/median/max over the
runs; elsewhere as min/median/max over the window pairs (window *i* of peerwatch
over window *i* of the floor). Either way the reader sees the spread next to the
number.

Detection at scale rides on the largest peerwatch (asyncio) run: two extra load
generators each hold ``victims`` of the connections from source addresses of
their own; after the idle measurement one freezes itself (a last PING on every
connection, then SIGSTOP) and the other is killed with SIGKILL a few seconds
later (two bursts of 1,000, each at once, measured apart). Every verdict the
server gives is classified by the peer's address: a verdict for any other
connection is a false one.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.detection import EXPECTED, summary_ms
from bench.procs import Child, ChildFailed, CpuWindow, children, raise_nofile, rss_kib

#: At most this many connections per source address (each has ~28,000 ephemeral ports).
PER_SOURCE = 20_000
#: At most this many connections per load-generator process (under a 20,000 fd limit).
PER_PROCESS = 15_000
MIN_SOURCES = 3
FROZEN_SOURCE = "127.0.0.250"
#: Seconds between the freeze and the kill (at most half the timeout).
KILL_AFTER_FREEZE = 5.0
KILLED_SOURCE = "127.0.0.251"


@dataclass(frozen=True)
class ScaleSetup:
    label: str
    kind: str  # floor | peerwatch
    uvloop: bool = False
    batch: bool = False  # peerwatch with batch_pings: the server pings, its peers answer
    callbacks: bool = False  # peerwatch with a callback handler: no task per connection


#: The gateway's configuration: the server pings in batches and its handler is a plain
#: function setting callbacks (no task per connection). "peerwatch" is the default one:
#: its peers ping, and an ``async def`` handler runs as a task per connection.
BATCHED = "peerwatch, batched pings, callbacks"
SETUPS = [
    ScaleSetup("minimal ping/pong floor", "floor"),
    ScaleSetup("peerwatch", "peerwatch"),
    ScaleSetup(BATCHED, "peerwatch", batch=True, callbacks=True),
    ScaleSetup("minimal ping/pong floor + uvloop", "floor", uvloop=True),
    ScaleSetup("peerwatch + uvloop", "peerwatch", uvloop=True),
    ScaleSetup(f"{BATCHED} + uvloop", "peerwatch", uvloop=True, batch=True, callbacks=True),
]


@dataclass(frozen=True)
class Plan:
    counts: list[int]
    interval: float
    timeout: float
    warmup: float
    window: float
    windows: int
    victims: int  # frozen, and as many again killed, in the largest peerwatch run
    uvloop: bool
    stable: dict[int, int]  # connection count -> consecutive runs of every setup there


FULL = Plan(
    [1000, 5000, 10_000, 15_000, 50_000, 100_000],
    10.0,
    30.0,
    3.0,
    10.0,
    2,
    1000,
    True,
    {5000: 5, 10_000: 5},
)
QUICK = Plan([2000], 1.0, 3.0, 0.5, 1.0, 2, 100, False, {2000: 2})


def fits(count: int) -> int | None:
    """None when one process may hold ``count`` sockets, else the most it may open.

    Children inherit this process's hard RLIMIT_NOFILE; raising it takes
    CAP_SYS_RESOURCE, which a container may lack (then 100,000 cannot be held in
    one process here, and the run says so rather than measuring something else).
    peerwatch keeps an eighth of the limit (at most 64) and what is open in reserve.
    """
    limit = raise_nofile(count + 4096)
    room = limit - min(64, limit // 8) - 256
    return None if count <= room else room


def load_shares(count: int) -> list[tuple[int, list[str]]]:
    """Split ``count`` connections over processes and source addresses 127.0.0.10 and up."""
    sources = [f"127.0.0.{10 + i}" for i in range(max(MIN_SOURCES, -(-count // PER_SOURCE)))]
    processes = max(1, -(-count // PER_PROCESS))
    shares = [count // processes + (i < count % processes) for i in range(processes)]
    # each process gets a disjoint slice of the sources when there are enough
    return [(share, sources[i::processes] or sources) for i, share in enumerate(shares)]


def client_kind(server_kind: str) -> str:
    """The floor's peers echo its pings; every other server speaks peerwatch's handshake."""
    return "floor" if server_kind == "floor" else "peerwatch"


class ScaleFlock:
    """Load generators holding connections together; opened at one ``go``."""

    def __init__(self, kind: str, port: int, plan: Plan, groups: list[tuple[int, list[str]]]):
        self.kids: list[Child] = []
        self.count = sum(share for share, _ in groups)
        timing = ["--interval", str(plan.interval), "--timeout", str(plan.timeout)]
        try:
            for share, sources in groups:
                args = [kind, str(port), str(share), "--sources", ",".join(sources), "--go"]
                self.kids.append(Child("bench.scale_clients", [*args, *timing], cpu=1))
            for kid in self.kids:
                kid.read_event(60, "armed")
        except BaseException:
            self.stop()
            raise

    def open(self, timeout: float) -> float:
        for kid in self.kids:
            kid.command("go")
        deadline = time.monotonic() + timeout
        ready = [
            kid.read_event(max(1.0, deadline - time.monotonic()), "ready") for kid in self.kids
        ]
        held = sum(int(r["connections"]) for r in ready)
        if held != self.count:
            raise ChildFailed(f"load generators opened {held} of {self.count} connections")
        return float(max(r["at"] for r in ready) - min(r["started"] for r in ready))

    def pings(self) -> int:
        return sum(int(kid.ask("stats", "stats")["pings"]) for kid in self.kids)

    def stop(self) -> None:
        for kid in reversed(self.kids):
            kid.stop()


def wait_held(server: Child, count: int, timeout: float) -> int:
    """The server's connection count once it reaches ``count`` (or at ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        held = int(server.ask("stats", "stats")["connections"])
        if held >= count or time.monotonic() > deadline:
            return held
        time.sleep(0.2)


def measure(setup: ScaleSetup, count: int, plan: Plan, detect: bool, log: Any) -> dict[str, Any]:
    timing = ["--interval", str(plan.interval), "--timeout", str(plan.timeout)]
    server_args = [setup.kind, "--connections", str(count), *timing, "--max-seconds", "1200"]
    # A gateway that expects N peers back at once sizes its handshake allowance for
    # them; with the default (64, 1 s grace) a load generator that lags on this
    # shared machine gets some of its peers dropped as silent, and N is not held.
    # The reconnect storm (bench/storm.py) measures the default.
    server_args += ["--max-handshakes", str(count)]
    if setup.uvloop:
        server_args.append("--uvloop")
    if setup.batch:
        server_args.append("--batch-pings")
    if setup.callbacks:
        server_args.append("--callbacks")
    server = Child("bench.scale_server", server_args, cpu=0)
    with children(server):
        port = server.read_event(30, "ready")["port"]
        time.sleep(0.5)
        empty_rss = rss_kib(server.pid)
        victims = plan.victims if detect else 0
        groups = load_shares(count - 2 * victims)
        if victims:
            groups += [(victims, [FROZEN_SOURCE]), (victims, [KILLED_SOURCE])]
        flock = ScaleFlock(client_kind(setup.kind), port, plan, groups)
        try:
            open_seconds = flock.open(60 + count / 500)
            held = wait_held(server, count, 30)
            # with batch_pings the clients ping on their own schedule until the server's
            # first PING reaches them (up to an interval after their own first one): idle
            # is what follows, two intervals after the connections opened
            time.sleep(max(plan.warmup, 2 * plan.interval) if setup.batch else plan.warmup)
            samples = []
            for _ in range(plan.windows):
                pings_before = flock.pings()
                cpu = CpuWindow(server.pid, *(kid.pid for kid in flock.kids))
                time.sleep(plan.window)
                server_cpu, *_ = cpu.stop()
                samples.append(
                    {
                        "server_cpu": server_cpu,
                        "other_cpu": cpu.other,
                        "pings_per_conn_s": (flock.pings() - pings_before) / cpu.wall / count,
                    }
                )
            rss = rss_kib(server.pid)
            still_held = wait_held(server, count, 0)
            row: dict[str, Any] = {
                "setup": setup.label,
                "connections": count,
                "held": min(held, still_held),
                "open_seconds": open_seconds,
                "server_cpu_windows": [s["server_cpu"] for s in samples],
                "server_cpu": statistics.median(s["server_cpu"] for s in samples),
                "other_cpu": statistics.median(s["other_cpu"] for s in samples),
                "pings_per_conn_s": statistics.median(s["pings_per_conn_s"] for s in samples),
                "empty_rss_kib": empty_rss,
                "rss_kib": rss,
                "rss_per_conn_kib": (rss - empty_rss) / max(1, min(held, still_held)),
            }
            if victims:
                frozen, killed = flock.kids[-2], flock.kids[-1]
                row["detection"] = detect_at_scale(server, frozen, killed, count, plan, log)
        finally:
            flock.stop()
    return row


def detect_at_scale(
    server: Child, frozen: Child, killed: Child, count: int, plan: Plan, log: Any
) -> dict[str, Any]:
    """Freeze one victim process and kill the other at once; collect every verdict."""
    server.ask("report-verdicts", "reporting")
    frozen.command("freeze")
    freezing = frozen.read_event(10, "freezing")
    written = {int(port): float(at) for port, at in freezing["written"].items()}
    # the kill comes a little later: killed at the very moment of the freeze, the server
    # reads the frozen peers' last PINGs behind 1,000 EOF verdicts, and the frozen
    # lateness would measure the kill burst, not the detection
    time.sleep(min(KILL_AFTER_FREEZE, plan.timeout / 2))
    killed_at = time.monotonic()
    killed.proc.kill()
    killed.proc.wait(10)
    exited_at = time.monotonic()  # reaped: the kernel has closed its sockets (FIN sent)
    expected_sources = {FROZEN_SOURCE: "frozen", KILLED_SOURCE: "killed"}
    lateness: dict[str, list[float]] = {
        "frozen": [],
        "internal": [],
        "read": [],
        "handler": [],
        "killed": [],
        "exited": [],
    }
    wrong_cause: list[str] = []
    false_verdicts: list[str] = []
    deadline = time.monotonic() + plan.timeout + 10
    seen = 0
    while seen < 2 * plan.victims:
        try:
            batch = server.read_event(max(0.1, deadline - time.monotonic()), "verdicts")
        except ChildFailed:
            break
        for event in batch["verdicts"]:
            group = expected_sources.get(event["peer"])
            if group is None:
                false_verdicts.append(f"{event['peer']}: {event['cause']}")
                continue
            seen += 1
            if event["cause"] not in EXPECTED[group]:
                wrong_cause.append(f"{group}: {event['cause']}")
            elif group == "frozen":
                last_ping = written[int(event["port"])]  # this connection's last evidence
                lateness["frozen"].append(event["callback_at"] - last_ping - plan.timeout)
                lateness["internal"].append(event["silent_for"] - plan.timeout)
                # where the rest goes: the last PING read by the server after it was written,
                # and the verdict reaching the handler after it was decided
                heard_at = event["detected_at"] - event["silent_for"]
                lateness["read"].append(heard_at - last_ping)
                lateness["handler"].append(event["callback_at"] - event["detected_at"])
            else:
                lateness["killed"].append(event["callback_at"] - killed_at)
                lateness["exited"].append(event["callback_at"] - exited_at)
    time.sleep(1.0)  # any false verdict right behind the last expected one is still counted
    with contextlib.suppress(ChildFailed):
        for event in server.read_event(0.6, "verdicts")["verdicts"]:
            if event["peer"] not in expected_sources:
                false_verdicts.append(f"{event['peer']}: {event['cause']}")
    others_held = server.ask("stats", "stats")["connections"]
    frozen.proc.kill()  # a stopped process ignores SIGTERM until continued
    result = {
        "victims": plan.victims,
        "others": count - 2 * plan.victims,
        "others_still_held": others_held,
        "frozen_ms": summary_ms(lateness["frozen"]),
        "internal_ms": summary_ms(lateness["internal"]),
        "read_ms": summary_ms(lateness["read"]),
        "handler_ms": summary_ms(lateness["handler"]),
        "killed_ms": summary_ms(lateness["killed"]),
        "killed_after_exit_ms": summary_ms(lateness["exited"]),
        "wrong_cause": wrong_cause[:20],
        "false_verdicts": len(false_verdicts),
        "false_examples": false_verdicts[:20],
    }
    log(
        f"  scale detection {count}: frozen p99 {result['frozen_ms'].get('p99', math.nan):.1f} ms"
        f" killed p99 {result['killed_ms'].get('p99', math.nan):.1f} ms"
        f" false {len(false_verdicts)} wrong {len(wrong_cause)} still held {others_held}"
    )
    return result


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def window_ratios(mine: dict[str, Any], floor: dict[str, Any]) -> list[float]:
    """peerwatch's CPU over the floor's, window *i* against window *i* of the same run."""
    pairs = zip(mine["server_cpu_windows"], floor["server_cpu_windows"], strict=False)
    return [ours / theirs for ours, theirs in pairs if theirs > 0]


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row from consecutive runs of one setup at one count: medians, and each
    run's own numbers kept (``runs``) so the spread can be shown next to every ratio."""
    row = dict(runs[-1])  # the detection, if any, rode on the last run
    row["runs"] = [
        {k: run[k] for k in ("server_cpu_windows", "server_cpu", "rss_per_conn_kib", "held")}
        for run in runs
    ]
    row["server_cpu_windows"] = [c for run in runs for c in run["server_cpu_windows"]]
    for key in ("server_cpu", "other_cpu", "pings_per_conn_s", "rss_per_conn_kib", "open_seconds"):
        row[key] = statistics.median(run[key] for run in runs)
    row["held"] = min(run["held"] for run in runs)
    return row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each peerwatch row gets its CPU ratio to its floor with the same loop: with several
    runs, one ratio per run (the median of its windows) and their min/median/max; with one
    run, the min/median/max of its windows."""
    floors = {(r["connections"], "uvloop" in r["setup"]): r for r in rows if "floor" in r["setup"]}
    for row in rows:
        floor = floors.get((row["connections"], "uvloop" in row["setup"]))
        if "floor" in row["setup"] or floor is None:
            continue
        mine, theirs = row.get("runs", [row]), floor.get("runs", [floor])
        if len(mine) > 1 and len(theirs) > 1:
            per_run = [
                statistics.median(ratios)
                for a, b in zip(mine, theirs, strict=False)
                if (ratios := window_ratios(a, b))
            ]
            if per_run:
                row["run_ratios"] = per_run
                row["cpu_ratio"] = spread(per_run)
            continue
        ratios = window_ratios(row, floor)
        if ratios:
            row["cpu_ratio"] = spread(ratios)


def run_scale(quick: bool = False, log: Any = print) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    setups = [s for s in SETUPS if plan.uvloop or not s.uvloop]
    rows: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    counts = []
    for count in plan.counts:
        room = fits(count)
        if room is None:
            counts.append(count)
            continue
        failed[f"{count:,} connections"] = (
            f"RLIMIT_NOFILE: one process may open {room:,} sockets here (the hard limit"
            " cannot be raised without CAP_SYS_RESOURCE)"
        )
        log(f"  scale {count}: not measured, {failed[f'{count:,} connections']}")
    largest = max(counts)
    for count in counts:
        runs = plan.stable.get(count, 1)
        measured: dict[str, list[dict[str, Any]]] = {setup.label: [] for setup in setups}
        for run in range(runs):  # consecutive runs, the setups interleaved within each
            for setup in setups:
                detect = (
                    run == runs - 1
                    and count == largest
                    and setup.kind == "peerwatch"
                    and not setup.uvloop
                )
                try:
                    row = measure(setup, count, plan, detect, log)
                except ChildFailed as exc:
                    failed[f"{setup.label}, {count:,} connections, run {run + 1}"] = str(exc)[-600:]
                    log(f"  scale {setup.label} {count}: FAILED {str(exc)[-300:]}")
                    continue
                measured[setup.label].append(row)
                log(
                    f"  scale {setup.label:34s} {count:>7d} conns run {run + 1}/{runs}:"
                    f" cpu {row['server_cpu']:.4f} s/s"
                    f" windows {[round(c, 4) for c in row['server_cpu_windows']]}"
                    f" rss +{row['rss_per_conn_kib']:.2f} KiB/conn held {row['held']}"
                    f" opened in {row['open_seconds']:.1f} s pings/conn/s"
                    f" {row['pings_per_conn_s']:.3f} other {row['other_cpu']:.2f}"
                )
        rows += [merge_runs(samples) for samples in measured.values() if samples]
    add_ratios(rows)
    for row in rows:
        if "cpu_ratio" in row:
            log(f"  scale {row['setup']} {row['connections']}: ratio {row['cpu_ratio']}")
    return {
        "interval_s": plan.interval,
        "timeout_s": plan.timeout,
        "window_s": plan.window,
        "windows": plan.windows,
        "rows": rows,
        "failed": failed,
    }
