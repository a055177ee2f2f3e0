"""Python heap per idle server connection, with tracemalloc: ``python -m bench.mem_per_conn N``.

The server runs in this process with tracemalloc on; a child process opens ``N`` plain
sockets, sends each a HELLO and then stays silent (the server's timeout is long enough
that no verdict comes during the measurement). The figure is the traced heap after all
``N`` handlers await ``wait_closed``, less the heap before the first accept, over ``N``;
the lines that hold the most follow, so two trees can be compared side by side.
``--callbacks`` measures a plain-function handler instead (the callback style: it sets a
message callback and a verdict callback, and no task runs per connection).
RSS (which adds the kernel-side and allocator overheads) is the scale benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tracemalloc

from bench.procs import raise_nofile

CLIENT = """
import socket, sys
from bench.procs import raise_nofile
raise_nofile()
from bench.rawclients import peerwatch_hello
n, port = int(sys.argv[1]), int(sys.argv[2])
hello = peerwatch_hello(30.0, 120.0)
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(hello)
    socks.append(s)
print("open", flush=True)
sys.stdin.read()
"""


async def measure(n: int, top: int = 0, callbacks: bool = False) -> float:
    """Traced bytes per connection at ``n`` idle connections; prints the ``top`` lines.
    ``callbacks``: a plain-function handler (no task per connection)."""
    import peerwatch

    held = 0

    async def handler(conn: peerwatch.Connection) -> None:
        nonlocal held
        held += 1
        await conn.wait_closed()

    def on_message(conn: peerwatch.Connection, message: bytes) -> None:
        conn.enqueue_nowait(message)

    def on_verdict(conn: peerwatch.Connection, verdict: peerwatch.Verdict) -> None:
        nonlocal held
        held -= 1

    def callback_handler(conn: peerwatch.Connection) -> None:
        nonlocal held
        held += 1
        conn.set_message_callback(on_message)
        conn.add_verdict_callback(on_verdict)

    server = await peerwatch.serve(
        callback_handler if callbacks else handler,
        interval=30.0,
        timeout=120.0,
        max_handshakes=n,
    )
    await asyncio.sleep(0.1)
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    child = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(n), str(server.port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):  # at most 60 s
            if held >= n:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        after = tracemalloc.take_snapshot()
        filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
        diff = after.filter_traces(filters).compare_to(before.filter_traces(filters), "lineno")
        total = sum(stat.size_diff for stat in diff)
        tracemalloc.stop()
        if held < n:
            raise RuntimeError(f"only {held} of {n} connections reached their handler")
        if top:
            print(f"{held} handlers, {total / held:.0f} B traced per connection")
        for stat in diff[:top]:
            frame = stat.traceback[0]
            print(f"  {stat.size_diff / held:7.1f} B  {frame.filename}:{frame.lineno}")
        return total / held
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
        await server.shutdown(drain=5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description="traced bytes per idle peerwatch connection")
    parser.add_argument("connections", type=int, nargs="?", default=10_000)
    parser.add_argument("top", type=int, nargs="?", default=20, help="largest lines shown")
    parser.add_argument(
        "--callbacks", action="store_true", help="a plain-function handler: no task per connection"
    )
    args = parser.parse_args()
    raise_nofile()
    asyncio.run(measure(args.connections, args.top or 1, args.callbacks))


if __name__ == "__main__":
    main()
