"""``peerwatch demo``: watch a real peer process die three ways and read each verdict.

Runs on loopback only, in a minute of wall time at most: a peer process is
started, a connection made, and then the peer is closed politely, frozen with
SIGSTOP, or killed with SIGKILL. The demo prints what peerwatch concluded and
how long it took, next to what a plain socket would have told you. With
``--json``, one JSON line per fault on stdout (docs/JSON.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from peerwatch.cli.args import positive

PEER = """
import asyncio, peerwatch, sys
async def echo(conn):
    async for m in conn:
        if m == b"bye":
            await conn.close("demo asked the peer to leave")
            return
        await conn.enqueue(m)
async def main():
    srv = await peerwatch.serve(echo, "127.0.0.1", 0, interval=%(interval)r, timeout=%(timeout)r)
    print(srv.port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

PLAIN = {
    "close": "a plain recv() returns b'' at once; a plain send() succeeds for a while",
    "freeze": "a plain recv() blocks forever: the peer's kernel still ACKs, nothing arrives",
    "kill": "a plain recv() returns b'' (or ECONNRESET if data was unread)",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="watch a peer process close, freeze and die, and read each verdict"
    )
    parser.add_argument("--interval", type=positive, default=0.2, help="heartbeat interval (s)")
    parser.add_argument(
        "--timeout", type=positive, default=1.0, help="silence before a verdict (s)"
    )
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout (docs/JSON.md)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from peerwatch.core.config import Config

    # the settings are checked here, where a mistake is a usage error (ConfigError: exit 2),
    # not in the peer process, where it would only show as a peer that never started
    Config(interval=args.interval, timeout=args.timeout)
    import asyncio  # here, not at the top: every command's start-up would pay for it

    return asyncio.run(_demo(args.interval, args.timeout, as_json=args.json))


async def _demo(interval: float, timeout: float, *, as_json: bool = False) -> int:
    import asyncio
    import subprocess

    import peerwatch
    from peerwatch.cli.jsonout import emit

    if not as_json:
        print(
            f"peerwatch demo: heartbeat every {interval} s, verdict after {timeout} s of silence\n"
        )
    for fault in ("close", "freeze", "kill"):
        proc = subprocess.Popen(
            [sys.executable, "-c", PEER % {"interval": interval, "timeout": timeout}],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            port = int(await asyncio.to_thread(proc.stdout.readline))
            conn = await peerwatch.connect("127.0.0.1", port, interval=interval, timeout=timeout)
            await conn.send(b"hello")
            await conn.recv()
            loop = asyncio.get_running_loop()
            started = loop.time()
            if fault == "close":
                await conn.enqueue(b"bye")
            elif fault == "freeze":
                os.kill(proc.pid, signal.SIGSTOP)
            else:
                os.kill(proc.pid, signal.SIGKILL)
            verdict = await asyncio.wait_for(conn.wait_closed(), timeout * 5 + 5)
            took = (verdict.detected_at - started) * 1000
            if as_json:
                emit(
                    "verdict",
                    fault=fault,
                    cause=verdict.cause.value,
                    took_ms=round(took, 1),
                    detail=verdict.detail,
                    without_peerwatch=PLAIN[fault],
                )
                continue
            print(f"peer {fault:<7}-> {verdict.cause.value:<8} after {took:7.1f} ms")
            print(f"               {verdict.detail}")
            print(f"               (without peerwatch: {PLAIN[fault]})\n")
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    return 0
