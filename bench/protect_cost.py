"""What zero-code protection and the pool check cost, side by side in one run.

- ``peerwatch.check`` on a live PostgreSQL connection vs the ``SELECT 1`` round
  trip a pool pre-ping pays (and ``assess``, and a Redis ``PING``), on 127.0.0.1
  against real servers (``peerwatch.testing.servers``); target: check <= 1/20.
- Per ``send``/``recv`` cost under ``peerwatch run`` vs the same program
  unprotected: 1-byte ping-pong over a loopback pair (``--include-loopback``, so
  the connection really is protected), alternating runs, median of each.
- Start-up: ``python -c pass`` (and ``import socket``) with the bootstrap on
  the path vs without, alternating, median; target < 5 ms.
- Pool trials: the pool-check tests run with ``PEERWATCH_POOL_TRIALS`` (1,000 in
  a full run): every pooled connection the server closed must be replaced at
  checkout with no error reaching the application.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

PINGPONG = r"""
import socket, sys, time
n = int(sys.argv[1])
listener = socket.create_server(("127.0.0.1", 0))
a = socket.create_connection(listener.getsockname())
b, _ = listener.accept()
assert a.getsockopt(socket.IPPROTO_TCP, 18) == int(sys.argv[2])  # protected or not, as asked
t = time.perf_counter()
for _ in range(n):
    a.send(b"x"); b.recv(1); b.send(b"y"); a.recv(1)
print((time.perf_counter() - t) / n / 4 * 1e9)
"""


def per_call_ns(fn: Callable[[], object], n: int) -> float:
    """Median over 5 batches of the time per call, in nanoseconds."""
    batches = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        batches.append((time.perf_counter() - t) / n * 1e9)
    return statistics.median(batches)


def measure_check(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    import psycopg
    import redis

    import peerwatch
    from peerwatch.testing.servers import start_postgres, start_redis

    pg, rd = start_postgres(), start_redis()
    try:
        conn = psycopg.connect(pg.extra["dsn"], autocommit=True)
        r = redis.Redis(*rd.address)
        r.ping()
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        n_fast, n_rtt = (2000, 200) if quick else (50000, 5000)
        rows = {
            "check(socket)": per_call_ns(lambda: peerwatch.check(sock), n_fast),
            "check(psycopg connection)": per_call_ns(lambda: peerwatch.check(conn), n_fast),
            "assess(socket)": per_call_ns(lambda: peerwatch.assess(sock), n_fast // 10),
            "SELECT 1 (psycopg, loopback)": per_call_ns(lambda: conn.execute("SELECT 1"), n_rtt),
            "PING (redis-py, loopback)": per_call_ns(r.ping, n_rtt),
        }
        assert not peerwatch.check(sock).dead
        sock.close()
        conn.close()
        r.close()
    finally:
        pg.stop()
        rd.stop()
    for name, ns in rows.items():
        log(f"   {name}: {ns / 1000:.2f} us")
    return {"ns": rows}


def measure_send_recv(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    n, reps = (2000, 2) if quick else (50000, 7)
    plain_cmd = [sys.executable, "-c", PINGPONG, str(n), "0"]
    run_cmd = [sys.executable, "-m", "peerwatch", "run", "--timeout", "5", "--include-loopback",
               "--", sys.executable, "-c", PINGPONG, str(n), "4600"]  # fmt: skip
    plain, protected = [], []
    for _ in range(reps):  # alternate, so both see the same machine load
        plain.append(float(subprocess.run(plain_cmd, capture_output=True, text=True,
                                          check=True).stdout))  # fmt: skip
        protected.append(float(subprocess.run(run_cmd, capture_output=True, text=True,
                                              check=True).stdout))  # fmt: skip
    result = {
        "plain_ns": statistics.median(plain),
        "protected_ns": statistics.median(protected),
        "plain_runs": plain,
        "protected_runs": protected,
    }
    result["ratio"] = result["protected_ns"] / result["plain_ns"]
    log(f"   send/recv: plain {result['plain_ns']:.0f} ns, protected "
        f"{result['protected_ns']:.0f} ns per call, ratio {result['ratio']:.3f}")  # fmt: skip
    return result


def run_timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, CPU ms of the child: user + system) for one run of ``argv``."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = (time.perf_counter() - t) * 1000
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited with {proc.returncode}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def measure_connect(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """What protection adds once per connection: create_connection + close, loopback."""
    import peerwatch

    n = 300 if quick else 3000
    server = socket.create_server(("127.0.0.1", 0), backlog=4096)
    address = server.getsockname()

    def one() -> None:
        socket.create_connection(address).close()
        server.accept()[0].close()

    try:
        plain = per_call_ns(one, n)
        peerwatch.protect(timeout=5, include_loopback=True)
        try:
            protected = per_call_ns(one, n)
        finally:
            peerwatch.unprotect()
    finally:
        server.close()
    log(
        f"   connect+accept+close: plain {plain / 1000:.1f} us, protected {protected / 1000:.1f} us"
    )
    return {"plain_ns": plain, "protected_ns": protected, "added_ns": protected - plain}


def measure_startup(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Start-up with and without the bootstrap; ``import json`` beside it calibrates the machine.

    peerwatch is byte-compiled first, as ``pip install`` does (this machine sets
    PYTHONDONTWRITEBYTECODE, which would otherwise measure the compiler).
    """
    import compileall

    from peerwatch.protection.environment import protected_environment
    from peerwatch.protection.settings import ProtectSettings

    compileall.compile_dir(str(ROOT / "src" / "peerwatch"), quiet=1)
    reps = 5 if quick else 40
    plain_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    boot_env = protected_environment(ProtectSettings(5), plain_env)
    setups = {
        "python -c pass": (plain_env, "pass"),
        "python -c pass, protected": (boot_env, "pass"),
        "python -c 'import socket'": (plain_env, "import socket"),
        "python -c 'import socket', protected": (boot_env, "import socket"),
        "python -c 'import json' (reference)": (plain_env, "import json"),
    }
    walls: dict[str, list[float]] = {k: [] for k in setups}
    cpus: dict[str, list[float]] = {k: [] for k in setups}
    for _ in range(reps):  # interleaved, so every setup sees the same machine load
        for label, (env, code) in setups.items():
            wall, cpu = run_timed([sys.executable, "-c", code], env)
            walls[label].append(wall)
            cpus[label].append(cpu)
    rows = {
        label: {
            "wall_ms": statistics.median(walls[label]),
            "cpu_ms": statistics.median(cpus[label]),
            "cpu_min_ms": min(cpus[label]),
        }
        for label in setups
    }
    added = {
        "pass": rows["python -c pass, protected"]["cpu_ms"] - rows["python -c pass"]["cpu_ms"],
        "import socket": rows["python -c 'import socket', protected"]["cpu_ms"]
        - rows["python -c 'import socket'"]["cpu_ms"],
        "import json (reference)": rows["python -c 'import json' (reference)"]["cpu_ms"]
        - rows["python -c pass"]["cpu_ms"],
    }
    for label, ms in added.items():
        log(f"   start-up, {label}: +{ms:.2f} ms CPU (median of {reps})")
    return {"rows": rows, "added_cpu_ms": added, "reps": reps}


def measure_pool_trials(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    trials = 40 if quick else 1000
    tests = [
        "tests/integrations/test_pool_check.py::"
        "test_sqlalchemy_pool_replaces_connections_postgres_closed",
        "tests/integrations/test_pool_check.py::test_redis_pool_replaces_connections_redis_closed",
        "tests/integrations/test_pool_check.py::"
        "test_urllib3_pool_replaces_keepalive_connections_nginx_closed",
    ]
    results = {}
    for test in tests:
        t = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
             test],
            cwd=ROOT, capture_output=True, text=True, check=False,
            env=dict(os.environ, PEERWATCH_POOL_TRIALS=str(trials)),
        )  # fmt: skip
        name = test.rsplit("::", 1)[1]
        results[name] = {
            "trials": trials,
            "passed": run.returncode == 0,
            "seconds": round(time.monotonic() - t, 1),
            "tail": run.stdout.strip().splitlines()[-1 if run.returncode == 0 else -15 :],
        }
        log(f"   {name}: {trials} trials, {'all replaced' if run.returncode == 0 else 'FAILED'}")
    return results


def run_protect(quick: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    return {
        "check": measure_check(quick, log),
        "send_recv": measure_send_recv(quick, log),
        "connect": measure_connect(quick, log),
        "startup": measure_startup(quick, log),
        "pool_trials": measure_pool_trials(quick, log),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run_protect(quick="--quick" in sys.argv), indent=1))


def protect_checks(result: dict[str, Any]) -> list[Any]:
    """The issue's targets for this benchmark (see bench/targets.py)."""
    from bench.targets import Check, ratio

    ns = result["check"]["ns"]
    checks = [
        Check(
            "check() cost / SELECT 1 round trip",
            ratio(ns.get("check(psycopg connection)"), ns.get("SELECT 1 (psycopg, loopback)")),
            0.05,
            False,
        ),
        Check(
            "send/recv under peerwatch run / unprotected", result["send_recv"]["ratio"], 1.05, False
        ),
        Check(
            "start-up added by the bootstrap (CPU)",
            result["startup"]["added_cpu_ms"]["pass"],
            5.0,
            False,
            " ms",
        ),
    ]
    for name, trial in result["pool_trials"].items():
        pool = name.removeprefix("test_").split("_pool")[0]
        checks.append(
            Check(
                f"{trial['trials']} pool trials replaced ({pool})",
                100.0 if trial["passed"] else 0.0,
                100.0,
                True,
                " %",
            )
        )
    return checks


def protect_section(result: dict[str, Any]) -> list[str]:
    """The report's section: the check's cost, per-call cost, start-up, pool trials."""
    ns = result["check"]["ns"]
    select = ns["SELECT 1 (psycopg, loopback)"]
    lines = [
        "`python -m bench protect` (`bench/protect_cost.py`): real PostgreSQL and Redis on"
        " 127.0.0.1, each figure the median of 5 batches.",
        "",
        "| operation | per call | vs SELECT 1 |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {v / 1000:.2f} µs | {v / select:.3f} |" for name, v in ns.items()]
    sr = result["send_recv"]
    conn = result.get("connect")
    if conn:
        lines += [
            "",
            "Once per connection (`create_connection` + accept + close on loopback, in-process"
            f" `protect(include_loopback=True)`): {conn['plain_ns'] / 1000:.1f} µs unprotected,"
            f" {conn['protected_ns'] / 1000:.1f} µs protected: +{conn['added_ns'] / 1000:.1f} µs"
            " for `guard` (a few getsockopt/setsockopt calls).",
        ]
    lines += [
        "",
        "Per `send`/`recv` (1-byte ping-pong on a loopback pair, medians of alternating runs):"
        f" unprotected {sr['plain_ns']:.0f} ns, under `peerwatch run --include-loopback`"
        f" {sr['protected_ns']:.0f} ns per call, ratio {sr['ratio']:.3f}: protection acts once"
        " per connection and leaves send/recv untouched.",
        "",
        "| start-up (median of "
        f"{result['startup']['reps']} interleaved runs) | wall | CPU | CPU min |",
        "|---|---:|---:|---:|",
    ]
    for label, row in result["startup"]["rows"].items():
        lines.append(
            f"| {label} | {row['wall_ms']:.1f} ms | {row['cpu_ms']:.1f} ms |"
            f" {row['cpu_min_ms']:.1f} ms |"
        )
    added = result["startup"]["added_cpu_ms"]
    lines += [
        "",
        f"The bootstrap adds {added['pass']:.2f} ms of CPU to an empty program and"
        f" {added['import socket']:.2f} ms to one that imports `socket` (hooks installed);"
        f" `import json` adds {added['import json (reference)']:.2f} ms on the same machine in"
        " the same run, for scale.",
        "",
        "| pool trials | trials | all replaced, no error | seconds |",
        "|---|---:|---|---:|",
    ]
    for name, trial in result["pool_trials"].items():
        lines.append(
            f"| {name} | {trial['trials']} | {'yes' if trial['passed'] else '**no**'} |"
            f" {trial['seconds']} |"
        )
    return lines
