"""Resume benchmark server child: a plain or resumable peerwatch server that counts and times.

``python -m bench.resume_server plain|memory|redis [--host H] [--redis URL]``

The handler consumes every message in the application. ``END`` is answered
with ``COUNT <n>`` (messages consumed since the last END, as ``tp_server``
does). Messages that start with ``REPLAY`` are the ones a resume-cost run
enqueued while the cable was out (or at once on a new session, the baseline):
the handler notes when it started and when the first and the last of them
reached the application, and ``REPORT`` is answered with a JSON object of those
times and of every ``Resumed`` event the server's side of the session saw (all
on this process's ``loop.time()``, the same clock as the events).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

from bench.aiohelpers import loop_name, run
from bench.floor import END
from bench.procs import child_setup, emit

MAX_MESSAGE = 2 * 1024 * 1024
REPLAY = b"REPLAY"
REPORT = b"REPORT"
#: Liveness settings of both sides (``--fast``: the resume-cost runs, whose outage must be
#: noticed quickly; the throughput runs keep bench.throughput's, which a loaded 2-core
#: machine cannot mistake for a dead peer).
SETTINGS = {"interval": 1.0, "timeout": 5.0, "max_frame": MAX_MESSAGE}
FAST = {**SETTINGS, "interval": 0.2, "timeout": 1.0}


async def handle(conn: Any) -> None:
    import peerwatch

    loop = asyncio.get_running_loop()
    count = 0
    timings: dict[str, Any] = {"started_at": loop.time(), "resumed_at": [], "replays": 0}
    timings.update(first_replay_at=None, last_replay_at=None)

    def on_event(event: Any) -> None:
        if type(event).__name__ == "Resumed":
            timings["resumed_at"].append(event.at)

    if hasattr(conn, "subscribe"):
        conn.subscribe(on_event)
        # a new session's first connection: when its messages can start to flow
        conn.ready.add_done_callback(lambda _: timings.update(attached_at=loop.time()))
    try:
        async for message in conn:
            if message.startswith(END):
                await conn.enqueue(b"COUNT %d" % count)
                count = 0
            elif message.startswith(REPLAY):
                now = loop.time()
                timings["first_replay_at"] = timings["first_replay_at"] or now
                timings["last_replay_at"] = now
                timings["replays"] += 1
            elif message.startswith(REPORT):
                await conn.enqueue(json.dumps(timings).encode())
            else:
                count += 1
    except peerwatch.PeerwatchError:
        pass


async def start(kind: str, host: str, redis_url: str | None, fast: bool) -> tuple[Any, Any]:
    """The server, and what to close after it (the Redis client)."""
    import peerwatch

    settings: dict[str, Any] = FAST if fast else SETTINGS
    if kind == "plain":
        return await peerwatch.serve(handle, host, 0, **settings), None
    store = client = None
    if kind == "redis":
        from peerwatch.core.session import SessionLimits
        from peerwatch.sessions.redis import RedisStore, connect

        assert redis_url is not None
        client = connect(redis_url, timeout=settings["timeout"])
        store = RedisStore(client, SessionLimits(window=30.0))
    server = await peerwatch.serve(
        handle, host, 0, resume_window=30.0, session_store=store, **settings
    )
    return server, client


async def main(options: argparse.Namespace) -> None:
    server, client = await start(options.kind, options.host, options.redis, options.fast)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    emit("ready", port=server.port, loop=loop_name())
    await stop.wait()
    server.close()
    if client is not None:
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["plain", "memory", "redis"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--redis", help="redis://... for the redis kind")
    parser.add_argument("--fast", action="store_true", help="interval 0.2 s, timeout 1 s")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=600)
    options = parser.parse_args()
    child_setup(options.max_seconds)
    run(main(options), options.uvloop)
