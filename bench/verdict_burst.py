"""The cost of many verdicts at one instant: ``python -m bench.verdict_burst N [profile]``.

A child process opens ``N`` plain sockets to a server in this process and says HELLO on
each, and ``--healthy M`` more that stay alive; then one PING on the ``N`` at once and
nothing more from them: their deadlines fall within a few ms, and the server reaches ``N``
verdicts in one burst, while the ``M`` healthy peers keep pinging (each every
``timeout / 3``, in slices) and must get none. Printed, in ms: how late each verdict was
decided after its own deadline (the peer's last PING read + timeout, from the verdict's
``silent_for``: ``decide``), how late its handler woke after that deadline (``wait_closed``
returning: ``late``), median, p99 and max; the decisions' spread (``burst_ms``); this
process's CPU time from shortly before the burst to its last socket closed (``cpu_ms``:
its cost, less disturbed than the lateness by a machine shared with other work), and
when that last close came (``closed_ms``, after the first deadline); and false verdicts
among the healthy. With
``profile``, the functions that took the most of the burst (cProfile, ~2x slower).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import math
import pstats
import statistics
import subprocess
import sys
import time

from bench.procs import raise_nofile

CLIENT = """
import select, socket, sys, time
from bench.rawclients import PW_PING, PW_PING_FRAME, peerwatch_hello
from bench.procs import raise_nofile
raise_nofile()
n, healthy, port, interval, timeout = (*map(int, sys.argv[1:4]), *map(float, sys.argv[4:6]))
hello = peerwatch_hello(interval, timeout)
ping = PW_PING_FRAME.pack(12, PW_PING, 1, 0)
slices = 20
period = timeout / 3 / slices  # every peer pings once per timeout / 3, a slice at a time
alive, turn, next_turn = [], 0, time.monotonic() + period

def ping_a_slice():
    global turn, next_turn
    for s in alive[turn % slices :: slices]:
        s.sendall(ping)
    turn += 1
    next_turn += period

for _ in range(n + healthy):  # the frozen first, all pinging until the burst
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(hello)
    alive.append(s)
    if time.monotonic() >= next_turn:
        ping_a_slice()
print(" ".join(str(s.getsockname()[1]) for s in alive[:n]), flush=True)
while not select.select([sys.stdin], [], [], max(0.0, next_turn - time.monotonic()))[0]:
    ping_a_slice()
sys.stdin.readline()
frozen, alive[:n] = alive[:n], []
for s in frozen:  # the last PING of each, at once; then they say nothing more
    s.sendall(ping)
while not select.select([sys.stdin], [], [], max(0.0, next_turn - time.monotonic()))[0]:
    ping_a_slice()
"""


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[int(0.99 * (len(ordered) - 1))] * 1000,
        "max": ordered[-1] * 1000,
    }


async def burst(
    n: int, healthy: int, timeout: float, profile: bool
) -> dict[str, dict[str, float] | float]:
    import peerwatch

    # (verdict decided, its deadline, handler woke), loop.time(), frozen peers only
    woke: list[tuple[float, float, float]] = []
    closed: list[float] = []  # when each frozen peer's socket was closed
    false_verdicts = 0
    held = 0
    frozen_ports: set[int] = set()
    loop = asyncio.get_running_loop()

    async def handler(conn: peerwatch.Connection) -> None:
        nonlocal held, false_verdicts
        held += 1
        verdict = await conn.wait_closed()
        now = loop.time()
        if conn.peer is None or conn.peer[1] not in frozen_ports:
            if verdict.cause is not peerwatch.Cause.LOCAL:
                false_verdicts += 1
                print("false verdict:", verdict.describe(), file=sys.stderr)
            return
        deadline = verdict.detected_at - verdict.silent_for + timeout
        woke.append((verdict.detected_at, deadline, now))
        await conn.closed  # the burst's work ends with its last socket closed
        closed.append(loop.time())

    interval = timeout / 4
    server = await peerwatch.serve(
        handler, interval=interval, timeout=timeout, max_handshakes=n + healthy
    )
    child = subprocess.Popen(
        [sys.executable, "-c", CLIENT, *map(str, (n, healthy, server.port, interval, timeout))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    profiler = cProfile.Profile() if profile else None
    try:
        ports = await loop.run_in_executor(None, child.stdout.readline)
        frozen_ports.update(map(int, ports.split()))
        for _ in range(1200):  # at most 120 s
            if held >= n + healthy:
                break
            await asyncio.sleep(0.1)
        child.stdin.write("ping\n")
        child.stdin.flush()
        await asyncio.sleep(timeout * 0.9)  # the deadlines are `timeout` after the PINGs
        if profiler is not None:
            profiler.enable()
        cpu = time.process_time()
        for _ in range(1000):  # at most 10 s
            if len(closed) >= n:
                break
            await asyncio.sleep(0.01)
        cpu = time.process_time() - cpu
        if profiler is not None:
            profiler.disable()
        await asyncio.sleep(timeout / 2)  # a healthy peer judged late would show here
    finally:
        child.stdin.close()
        child.wait(timeout=30)
        await server.shutdown(drain=5.0)
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    if not woke:
        raise SystemExit(f"no verdict for the {n} silent peers ({false_verdicts} false ones)")
    decided = [d for d, _, _ in woke]
    return {
        "verdicts": len(woke),
        "false": false_verdicts,
        "burst_ms": round((max(decided) - min(decided)) * 1000, 1),
        "cpu_ms": round(cpu * 1000, 1),
        "closed_ms": round((max(closed, default=math.nan) - min(d for _, d, _ in woke)) * 1000, 1),
        "decide": percentiles([d - due for d, due, _ in woke]),
        "late": percentiles([w - due for _, due, w in woke]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="N verdicts at one instant: how late")
    parser.add_argument("connections", type=int, nargs="?", default=1000)
    parser.add_argument("profile", nargs="?", choices=["profile"], help="print a cProfile")
    parser.add_argument("--healthy", type=int, default=0, help="peers that stay alive")
    parser.add_argument("--timeout", type=float, default=2.0, help="peerwatch timeout (s)")
    args = parser.parse_args()
    raise_nofile()
    started = time.monotonic()
    result = asyncio.run(burst(args.connections, args.healthy, args.timeout, args.profile))
    shown = {
        key: {q: round(v, 1) for q, v in value.items()} if isinstance(value, dict) else value
        for key, value in result.items()
    }
    print(shown, f"({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
