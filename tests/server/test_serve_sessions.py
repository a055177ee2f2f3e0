"""``serve --workers 2 --resume-window S``: the worker holding a session is SIGKILLed.

Real processes on loopback: the supervisor, two workers, a real redis-server,
and a resumable client in this process. The worker holding the session is
found by the kernel's view of its sockets (``/proc`` through psutil: which
worker has an ESTABLISHED connection on the port), then SIGKILLed in the middle
of a paced stream. ``--no-restart`` leaves the other worker as the only place
the reconnect can land.

- With the Redis store the session resumes there: every message reaches the
  workers' applications exactly once and in order (client -> server, counted
  in the workers' own logs), and every echo the applications produced reaches
  the client exactly once and in order (server -> client).
- With the in-process store the other worker does not know the session: the
  client ends it with SESSION_LOST, and every message it sent is either
  acknowledged or handed back, none both.
- With the Redis store stopped mid-session: SESSION_LOST naming the store, and
  every message handed back (none could be recorded as taken).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from serveproc import Served, established_by_pid, pid_gone
from sessionapp import LOG_DIR, read_logs

import peerwatch
from peerwatch import Cause, PeerDead
from peerwatch.testing.servers import Server

pytestmark = pytest.mark.timeout(90)

FAST = {"interval": 0.2, "timeout": 1.0}
COUNT = 120  # messages from the client, one every PACE seconds
PACE = 0.01
KILL_AT = 50  # SIGKILL the holder once this many were enqueued


def start(serve: Callable[..., Served], tmp_path: Path, *store: str) -> Served:
    here = str(Path(__file__).parent)
    env = {**os.environ, LOG_DIR: str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return serve(
        "--workers", "2", "--no-restart", "--handler", "sessionapp:logged_echo",
        "--resume-window", "10", "--interval", "0.2", "--timeout", "1", *store, env=env,
    )  # fmt: skip


async def holder(served: Served) -> int:
    """The worker with the session's connection (the kernel's view of its sockets)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        holding = [pid for pid in served.pids if established_by_pid(pid, served.port) > 0]
        if len(holding) == 1:
            return holding[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no single worker holds the connection: {served.pids}")


async def stream(
    conn: peerwatch.ResumableConnection, served: Served, sig: int = signal.SIGKILL
) -> tuple[list[bytes], list[peerwatch.Delivery], int, PeerDead | None]:
    """Send COUNT paced messages, signal the holder after KILL_AT; what went out, and who died."""
    sent: list[bytes] = []
    deliveries: list[peerwatch.Delivery] = []
    victim = 0
    try:
        for i in range(COUNT):
            message = b"c%03d" % i
            deliveries.append(await conn.enqueue(message))
            sent.append(message)
            if i == KILL_AT:
                victim = await holder(served)
                os.kill(victim, sig)
                if sig == signal.SIGTERM:
                    # block this loop until the worker is gone: the client reads its
                    # GOODBYE and resumes only after the shutdown finished (a slow client,
                    # or one whose first attempt failed), so nothing can race the books
                    assert pid_gone(victim, 15), "the worker did not shut down"
            await asyncio.sleep(PACE)
        await asyncio.wait_for(conn.drain(), 30)
    except PeerDead as dead:
        return sent, deliveries, victim, dead
    return sent, deliveries, victim, None


@pytest.mark.parametrize(
    "sig",
    [
        signal.SIGKILL,
        # a rolling restart: the worker shuts down gracefully and lets the session move
        # away, its books left in Redis (issue 12: it used to end it and forget them)
        signal.SIGTERM,
    ],
    ids=["SIGKILL", "SIGTERM"],
)
async def test_redis_store_the_session_resumes_on_the_other_worker_exactly_once(
    serve: Callable[..., Served], redis: Server, tmp_path: Path, sig: signal.Signals
) -> None:
    served = start(serve, tmp_path, "--session-store", f"redis://127.0.0.1:{redis.port}/0")
    assert "sessions redis://" in served.out[0]
    conn = await peerwatch.connect("127.0.0.1", served.port, resume=True, resume_timeout=20, **FAST)
    echoes: list[bytes] = []

    async def read() -> None:
        async for message in conn:
            echoes.append(message)

    reader = asyncio.ensure_future(read())
    try:
        sent, _, victim, dead = await stream(conn, served, sig)
        assert dead is None, dead.verdict if dead else None
        survivor = next(pid for pid in served.pids if pid != victim)
        logs: dict[int, list[tuple[str, bytes]]] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the last echoes may still be on their way
            logs = read_logs(str(tmp_path), served.pids)
            echoed = [
                m for pid in (victim, survivor) for w, m in logs.get(pid, []) if w == "echoed"
            ]
            if len(echoes) >= len(echoed) and echoed:
                break
            await asyncio.sleep(0.05)
        assert set(logs) == {victim, survivor}, "both workers' applications served the session"
        took = [m for pid in (victim, survivor) for what, m in logs[pid] if what == "took"]
        echoed = [m for pid in (victim, survivor) for what, m in logs[pid] if what == "echoed"]
        # client -> server: every message taken by an application exactly once, in order
        assert took == sent
        # server -> client: every echo kept by a worker arrives exactly once, in order; the
        # SIGKILL may fall between keeping an echo and logging it (then it arrives unlogged),
        # or between taking a message and keeping its echo (then there is no echo to send)
        received = [m.removeprefix(b"echo ") for m in echoes]
        assert len(received) == len(set(received)), "an echo arrived twice"
        assert received == [m for m in took if m in set(received)], "echoes out of order"
        assert set(echoed) <= set(received)
        assert len(set(took) - set(received)) <= 1 and len(set(received) - set(echoed)) <= 1
        # one outage, resumed on the survivor
        assert len(conn.history) == 1 and conn.history[0].outage is not None
        assert established_by_pid(survivor, served.port) == 1
        if sig == signal.SIGKILL:
            assert any(f"(pid {victim}) was killed by SIGKILL" in line for line in served.err)
        else:  # it shut down: the session was let go, not ended (GOODBYE GOING_AWAY)
            moved = conn.history[0].verdict
            assert moved.cause is Cause.GOODBYE and "session moved" in moved.detail, moved
            # and it left the books alone: the old code tried to delete them (SESSION_UNKNOWN
            # for the client when that won the race with closing the Redis client)
            assert not [line for line in served.err if "forgetting session" in line]
    finally:
        reader.cancel()
        await conn.close()


async def test_in_process_store_session_lost_every_message_acknowledged_or_handed_back(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = start(serve, tmp_path)
    conn = await peerwatch.connect("127.0.0.1", served.port, resume=True, resume_timeout=20, **FAST)
    reader_ended: list[BaseException] = []

    async def read() -> None:
        try:
            async for _ in conn:
                pass
        except PeerDead as exc:
            reader_ended.append(exc)

    reader = asyncio.ensure_future(read())
    try:
        sent, deliveries, victim, dead = await stream(conn, served)
        if dead is None:  # everything was acknowledged before the client learnt: ask again
            with pytest.raises(PeerDead) as raised:
                await asyncio.wait_for(conn.recv(), 20)
            dead = raised.value
        verdict = dead.verdict
        assert verdict.cause is Cause.SESSION_LOST
        assert verdict.detail.startswith("UNKNOWN"), verdict.detail
        acknowledged = [m for m, d in zip(sent, deliveries, strict=True) if d.acknowledged]
        handed_back = list(verdict.undelivered)
        assert not set(acknowledged) & set(handed_back), (
            "a message both acknowledged and handed back"
        )
        assert acknowledged + handed_back == sent  # every one, in order
        assert len(acknowledged) > KILL_AT // 2  # the session did carry messages before
        logs = read_logs(str(tmp_path), served.pids)
        took = [m for what, m in logs[victim] if what == "took"]
        assert set(acknowledged) <= set(took)  # acknowledged means the application took it
        assert took == sent[: len(took)]
        await asyncio.sleep(0.2)
        assert reader_ended and reader_ended[0].verdict.cause is Cause.SESSION_LOST
    finally:
        reader.cancel()
        await conn.close()


async def test_a_store_outage_ends_the_session_with_a_verdict_and_hands_every_message_back(
    serve: Callable[..., Served], redis: Server, tmp_path: Path
) -> None:
    served = start(serve, tmp_path, "--session-store", f"redis://127.0.0.1:{redis.port}/0")
    conn = await peerwatch.connect("127.0.0.1", served.port, resume=True, resume_timeout=20, **FAST)
    try:
        for i in range(5):
            await conn.send(b"before %d" % i)
            assert await asyncio.wait_for(conn.recv(), 10) == b"echo before %d" % i
        redis.stop()  # the store is gone mid-session
        sent: list[bytes] = []
        deliveries: list[peerwatch.Delivery] = []
        with pytest.raises(PeerDead) as raised:
            for i in range(200):
                message = b"after %d" % i
                deliveries.append(await conn.enqueue(message))
                sent.append(message)
                await asyncio.sleep(0.01)
            await asyncio.wait_for(conn.drain(), 20)
        verdict = raised.value.verdict
        assert verdict.cause is Cause.SESSION_LOST
        assert "session store" in verdict.detail, verdict.detail
        acknowledged = [m for m, d in zip(sent, deliveries, strict=True) if d.acknowledged]
        assert not acknowledged  # the server could not record a single take
        assert list(verdict.undelivered) == sent  # every one handed back, in order
    finally:
        await conn.close()


async def raw_session_hello(port: int, session_id: bytes, token: bytes) -> bytes:
    """A hand-written client's session HELLO and RESUME; whatever the server answers."""
    from peerwatch.core.frames import (
        FLAG_SESSION,
        PROTOCOL_VERSION,
        Hello,
        encode_hello,
        encode_resume,
    )

    hello = Hello(PROTOCOL_VERSION, 7, 0.2, 1.0, 1 << 20, 1 << 20, FLAG_SESSION, session_id, token)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(encode_hello(hello) + encode_resume(1, 1))
        answer = b""
        while chunk := await asyncio.wait_for(reader.read(65536), 5):
            answer += chunk
        return answer
    finally:
        writer.close()


async def test_metrics_count_sessions_and_hijack_attempts_across_workers(
    serve: Callable[..., Served], redis: Server, tmp_path: Path
) -> None:
    served = start(serve, tmp_path, "--session-store", f"redis://127.0.0.1:{redis.port}/0",
                   "--metrics-port", "0")  # fmt: skip
    conns = [
        await peerwatch.connect("127.0.0.1", served.port, resume=True, **FAST) for _ in range(3)
    ]
    try:
        for conn in conns:
            await conn.send(b"hello")
        session_id = conns[0].session_id
        assert session_id is not None
        for _ in range(4):  # the right id with a wrong token, wherever the kernel sends it
            answer = await raw_session_hello(served.port, session_id, os.urandom(32))
            assert answer  # refused with GOODBYE(SESSION_UNKNOWN), then closed
        await raw_session_hello(served.port, os.urandom(16), os.urandom(32))  # unknown id
        deadline = time.monotonic() + 10
        while True:
            metrics = await served.metrics()
            done = metrics.get("peerwatch_session_hijack_attempts_total") == 4
            if (done and metrics.get("peerwatch_sessions") == 3) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert metrics["peerwatch_sessions"] == 3
        assert metrics["peerwatch_session_hijack_attempts_total"] == 4
        assert metrics["peerwatch_sessions_refused_total"] == 5
        for conn in conns:  # nobody's session was touched
            await conn.send(b"still mine")
            assert conn.history == []
    finally:
        for conn in conns:
            await conn.close()
