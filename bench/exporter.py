"""Exporter cost: CPU per scrape of ``peerwatch exporter`` at 10,000 sockets, side by side with ss.

This process opens 5,000 loopback connections (10,000 sockets, both ends held
here, so the exporter also scans 10,000 descriptors to name their owner),
starts the exporter as a child process and scrapes it over HTTP. The
exporter's CPU time (utime + stime from /proc) over the scrapes, divided by
their number, is the cost of one scrape; at one scrape every 15 s, the share
of a core is that over 15. Idle CPU between scrapes is measured too (it
should be nothing: the collector reads only when scraped). On the same
sockets, in the same run, ``ss -tinp`` (the same facts plus owners) is timed
as the yardstick, and the in-process split of one reading (dump, owners,
verdicts) says where the time goes.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

SCRAPE_INTERVAL = 15.0  # s, the budget's scrape interval
BUDGET = 1.0  # % of one core


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def connections(pairs: int) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        address = listener.getsockname()
        for _ in range(pairs):
            client = stack.enter_context(socket.create_connection(address))
            server, _ = listener.accept()
            stack.enter_context(server)
            client.sendall(b"x")  # some history: TCP_INFO with an RTT, like real connections
            server.recv(1)
        yield


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_ss(argv: list[str], runs: int) -> float:
    """CPU seconds per run of ss (children's rusage)."""
    before = children_cpu()
    for _ in range(runs):
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, timeout=60)
    return (children_cpu() - before) / runs


def split_one_reading() -> dict[str, float]:
    """Where one reading's time goes, measured in this process (CPU seconds), the way
    ``read_host`` reads: only the rules' TCP_INFO fields, no evidence, the cyclic GC paused
    (the owner scan is the uncached one: the exporter repeats it only for new sockets)."""
    from peerwatch.assessment.rules import RULE_FIELDS, assess_info
    from peerwatch.diag.owners import socket_owners
    from peerwatch.diag.sockdiag import read_sockets
    from peerwatch.gcpause import gc_paused

    def cpu(work: Callable[[], object]) -> tuple[float, Any]:
        start = time.process_time()
        out = work()
        return time.process_time() - start, out

    with gc_paused():
        dump, records = cpu(lambda: read_sockets(tcp_info_fields=RULE_FIELDS))
        owners, _ = cpu(socket_owners)
        verdicts, _ = cpu(lambda: [assess_info(r.facts(), figures=False) for r in records])
    return {"dump_s": dump, "owners_s": owners, "verdicts_s": verdicts}


def run_exporter(*, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Measure in a network namespace of its own when possible, so the exporter sees
    exactly the benchmark's sockets and not those of whatever else runs on the machine."""
    pairs = 250 if quick else 5000
    scrapes = 3 if quick else 20
    argv = [sys.executable, "-m", "bench.exporter", str(pairs), str(scrapes)]
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
        argv = ["unshare", "--net", "--", *argv]
    where = " in a private netns" if argv[0] == "unshare" else ""
    log(f"   {2 * pairs} sockets, {scrapes} scrapes{where}")
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    result["private_netns"] = argv[0] == "unshare"
    log(
        f"   scrape: {result['cpu_per_scrape_s'] * 1000:.0f} ms CPU "
        f"({result['wall_per_scrape_s'] * 1000:.0f} ms wall), "
        f"{result['core_share_percent']:.2f} % of a core at one scrape per {SCRAPE_INTERVAL:g} s; "
        f"ss -tinpoe {result['ss_tinpoe_cpu_s'] * 1000:.0f} ms; {result['series']} series"
    )
    return result


def measure(pairs: int, scrapes: int) -> dict[str, Any]:
    """Open the sockets, start the exporter, scrape it, time ss on the same sockets."""
    from bench.procs import raise_nofile

    raise_nofile()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False, capture_output=True)
    with connections(pairs):
        exporter = subprocess.Popen(
            [sys.executable, "-m", "peerwatch", "exporter", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert exporter.stdout is not None
            url = exporter.stdout.readline().split(" on ", 1)[1].strip()
            body = urllib.request.urlopen(url, timeout=60).read()  # warm-up (imports)
            idle_start = cpu_seconds(exporter.pid)
            idle_window = 1.0 if scrapes < 10 else 5.0
            time.sleep(idle_window)
            idle_cpu = (cpu_seconds(exporter.pid) - idle_start) / idle_window
            start_cpu, start_wall = cpu_seconds(exporter.pid), time.monotonic()
            each: list[float] = []  # per scrape, to the clock tick (10 ms): the spread
            for _ in range(scrapes):
                before = cpu_seconds(exporter.pid)
                body = urllib.request.urlopen(url, timeout=60).read()
                each.append(cpu_seconds(exporter.pid) - before)
            per_scrape = (cpu_seconds(exporter.pid) - start_cpu) / scrapes
            wall_per_scrape = (time.monotonic() - start_wall) / scrapes
        finally:
            exporter.kill()
            exporter.wait(timeout=10)
        series = sum(1 for line in body.decode().splitlines() if line.startswith("peerwatch_host_"))
        ss_runs = max(3, scrapes // 4)
        ss_full = time_ss(["ss", "-tinpoe", "state", "all"], ss_runs)
        ss_plain = time_ss(["ss", "-tan"], ss_runs)
        split = split_one_reading()
    share = per_scrape / SCRAPE_INTERVAL * 100
    return {
        "load_average": os.getloadavg()[0],  # the shared machine's load over the last minute
        "sockets": 2 * pairs,
        "scrapes": scrapes,
        "cpu_per_scrape_s": per_scrape,
        "cpu_each_scrape_s": each,
        "wall_per_scrape_s": wall_per_scrape,
        "core_share_percent": share,
        "idle_cpu_per_s": idle_cpu,
        "series": series,
        "ss_tinpoe_cpu_s": ss_full,
        "ss_tan_cpu_s": ss_plain,
        "split": split,
    }


def exporter_section(result: dict[str, Any]) -> list[str]:
    split = result["split"]
    return [
        f"`peerwatch exporter` scraped {result['scrapes']} times over HTTP with"
        f" {result['sockets']:,} TCP sockets open (loopback connections, both ends"
        " held by the benchmark process, so the owner scan reads as many descriptors too"
        + (
            "; in a network namespace of their own, so no other socket counts"
            if result.get("private_netns")
            else ""
        )
        + ");"
        " CPU time from /proc of the exporter process. `ss` ran on the same sockets in"
        " the same run.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| exporter CPU per scrape | {result['cpu_per_scrape_s'] * 1000:.0f} ms |",
        *(
            [
                "| exporter CPU per scrape, min / median / max"
                f" | {min(each) * 1000:.0f} / {statistics.median(each) * 1000:.0f}"
                f" / {max(each) * 1000:.0f} ms |"
            ]
            if (each := result.get("cpu_each_scrape_s"))
            else []
        ),
        f"| exporter wall time per scrape | {result['wall_per_scrape_s'] * 1000:.0f} ms |",
        f"| share of one core, one scrape per {SCRAPE_INTERVAL:g} s"
        f" | {result['core_share_percent']:.2f} % |",
        f"| exporter CPU between scrapes | {result['idle_cpu_per_s'] * 1000:.1f} ms/s |",
        "| `ss -tinpoe state all` CPU (same facts + owners)"
        f" | {result['ss_tinpoe_cpu_s'] * 1000:.0f} ms |",
        f"| `ss -tan` CPU (states only) | {result['ss_tan_cpu_s'] * 1000:.0f} ms |",
        "| exporter / `ss -tinpoe`"
        f" | {result['cpu_per_scrape_s'] / result['ss_tinpoe_cpu_s']:.2f}x |",
        f"| series in one scrape (bounded by --top) | {result['series']} |",
        "",
        f"Machine load average (1 min) at the end: {result.get('load_average', float('nan')):.1f}"
        " on 2 cores: CPU times grow with it (caches, hyperthreads), so compare the ratio"
        " to `ss`, measured under the same load.",
        "",
        f"One reading in-process: sock_diag dump {split['dump_s'] * 1000:.0f} ms,"
        f" owners from /proc {split['owners_s'] * 1000:.0f} ms,"
        f" verdicts {split['verdicts_s'] * 1000:.0f} ms (CPU).",
    ]


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), int(sys.argv[2]))))
