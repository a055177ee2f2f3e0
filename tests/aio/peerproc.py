"""A peerwatch peer in its own process, for tests that kill, stop or starve it.

    python peerproc.py echo     --interval I --timeout T [--port P]
    python peerproc.py record   --out FILE --kill-after K   (SIGKILLs itself after K messages)
    python peerproc.py slowread --batch N --pause S         (reads N messages every S seconds)
    python peerproc.py client   --port P                    (asks the test's server to block)

Servers print ``PORT <n>`` once listening. Echo understands ``close`` (replies
with GOODBYE) and echoes anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import struct
import sys

import peerwatch


async def echo(conn: peerwatch.Connection) -> None:
    async for message in conn:
        if message == b"close":
            await conn.close("asked to close")
            return
        await conn.enqueue(message)


def recorder(out: str, kill_after: int) -> peerwatch.aio.server.Handler:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    async def record(conn: peerwatch.Connection) -> None:
        count = 0
        while True:
            message = await conn.recv()
            # recorded before the ACK can leave: recv() only schedules it for the next loop pass
            os.write(fd, struct.pack("!I", len(message)) + message)
            count += 1
            if count == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    return record


def slow_reader(batch: int, pause: float) -> peerwatch.aio.server.Handler:
    async def read_slowly(conn: peerwatch.Connection) -> None:
        total = 0
        count = 0
        async for message in conn:
            if message == b"done":
                await conn.send(str(total).encode())
                continue
            total += len(message)
            count += 1
            if count % batch == 0:
                await asyncio.sleep(pause)

    return read_slowly


async def client(args: argparse.Namespace) -> None:
    conn = await peerwatch.connect("127.0.0.1", args.port, interval=args.interval,
                                   timeout=args.timeout)  # fmt: skip
    for word in (b"block", b"again"):
        await conn.send(word)
        assert await asyncio.wait_for(conn.recv(), 30) == word
    print("ALIVE", conn.verdict, flush=True)
    await conn.close("test over")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["echo", "record", "slowread", "client"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--out")
    parser.add_argument("--kill-after", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pause", type=float, default=0.1)
    args = parser.parse_args()
    if args.mode == "client":
        await client(args)
        return
    handler = {
        "echo": lambda: echo,
        "record": lambda: recorder(args.out, args.kill_after),
        "slowread": lambda: slow_reader(args.batch, args.pause),
    }[args.mode]()
    server = await peerwatch.serve(handler, "127.0.0.1", args.port, interval=args.interval,
                                   timeout=args.timeout)  # fmt: skip
    print("PORT", server.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(main())
