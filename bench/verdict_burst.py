"""The cost of many verdicts at one instant: ``python -m bench.verdict_burst N [profile]``.

A child process opens ``N`` plain sockets to a server in this process, says HELLO on
each, then one PING on all of them at once and nothing more: every deadline falls within
a few ms, and the server reaches ``N`` verdicts in one burst. Printed: how long the burst
took from its first verdict to its last (the decision), and how late each handler woke
after its own verdict (``wait_closed`` returning), median and p99; with ``profile``, the
functions that took the most of the burst (cProfile, which slows everything ~2x).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import subprocess
import sys
import time

from bench.procs import raise_nofile

CLIENT = """
import socket, struct, sys, time
from bench.rawclients import PW_PING, PW_PING_FRAME, peerwatch_hello
from bench.procs import raise_nofile
raise_nofile()
n, port = int(sys.argv[1]), int(sys.argv[2])
hello = peerwatch_hello(0.5, 2.0)
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(hello)
    socks.append(s)
sys.stdin.readline()
for s in socks:
    s.sendall(PW_PING_FRAME.pack(12, PW_PING, 1, 0))
sys.stdin.read()
"""


async def burst(n: int, profile: bool) -> dict[str, float]:
    import peerwatch

    woke: list[tuple[float, float]] = []  # (verdict decided, handler woke), loop.time()
    held = 0
    loop = asyncio.get_running_loop()

    async def handler(conn: peerwatch.Connection) -> None:
        nonlocal held
        held += 1
        verdict = await conn.wait_closed()
        woke.append((verdict.detected_at, loop.time()))

    server = await peerwatch.serve(handler, interval=0.5, timeout=2.0, max_handshakes=n)
    child = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(n), str(server.port)],
        stdin=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    profiler = cProfile.Profile() if profile else None
    try:
        for _ in range(600):  # at most 60 s
            if held >= n:
                break
            await asyncio.sleep(0.1)
        child.stdin.write("ping\n")
        child.stdin.flush()
        await asyncio.sleep(1.5)  # the deadlines are 2 s after the PINGs
        if profiler is not None:
            profiler.enable()
        for _ in range(100):  # at most 10 s
            if len(woke) >= held:
                break
            await asyncio.sleep(0.1)
        if profiler is not None:
            profiler.disable()
    finally:
        child.stdin.close()
        child.wait(timeout=30)
        await server.shutdown(drain=5.0)
    decided = [d for d, _ in woke]
    late = sorted(w - d for d, w in woke)
    result = {
        "verdicts": float(len(woke)),
        "burst_ms": (max(decided) - min(decided)) * 1000,
        "per_verdict_us": (max(w for _, w in woke) - min(decided)) / len(woke) * 1e6,
        "wake_p50_ms": statistics.median(late) * 1000,
        "wake_p99_ms": late[int(0.99 * (len(late) - 1))] * 1000,
    }
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="N verdicts at one instant: handler lateness")
    parser.add_argument("connections", type=int, nargs="?", default=1000)
    parser.add_argument("profile", nargs="?", choices=["profile"], help="print a cProfile")
    args = parser.parse_args()
    raise_nofile()
    started = time.monotonic()
    result = asyncio.run(burst(args.connections, args.profile is not None))
    print({k: round(v, 2) for k, v in result.items()}, f"({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
