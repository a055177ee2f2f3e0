"""The Redis session store against a real redis-server: a session survives its worker.

Each test starts its own redis-server on a Unix socket in ``tmp_path`` (no TCP
port at all) and kills it after. Two ``RedisStore`` objects with their own
clients stand for two workers.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from peerwatch.core.frames import Resume
from peerwatch.core.session import Session, SessionLimits, State
from peerwatch.errors import LocalProtocolError
from peerwatch.sessions.redis import Fenced, RedisStore

redis_asyncio = pytest.importorskip("redis.asyncio")

LIMITS = SessionLimits(max_replay_bytes=1 << 20, max_replay_age=60.0, window=5.0)
SID = bytes(range(1, 17))


@pytest.fixture
def redis_socket(tmp_path: Path) -> Iterator[Path]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (tools/system-deps.sh installs it)")
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        [server, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start within 10 s"
            time.sleep(0.01)
        yield sock
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
async def workers(redis_socket: Path) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    clients = [redis_asyncio.Redis(unix_socket_path=str(redis_socket)) for _ in range(2)]
    try:
        yield RedisStore(clients[0], LIMITS), RedisStore(clients[1], LIMITS)
    finally:
        for client in clients:
            await client.aclose()


def attach(session: Session, peer: Session, now: float) -> None:
    to_peer, to_session = session.attach(now), peer.attach(now)
    peer.on_resume(to_peer, now)
    session.on_resume(to_session, now)


async def test_a_session_resumes_on_another_worker_with_nothing_lost_or_repeated(
    workers: tuple[RedisStore, RedisStore],
) -> None:
    first, second = workers
    now = 0.0
    server = await first.open(now)
    client = Session(server.session_id, server.token, LIMITS, now)
    attach(client, server, now)
    # server -> client: three messages, stored before they are written
    for payload in (b"s1", b"s2", b"s3"):
        seq = server.send(payload, now)
        await first.sent(server, seq, payload)
    for message in server.outgoing()[:2]:  # s3 dies with the worker, in flight
        client.on_message(*message)
    assert client.take() == b"s1"
    ack = client.ack_due()
    assert ack == 1
    server.on_ack(ack)
    await first.acked(server)
    # client -> server: two messages; the server application takes the first
    for payload in (b"c1", b"c2"):
        client.send(payload, now)
    for message in client.outgoing():
        server.on_message(*message)
    assert server.take() == b"c1"
    await first.consumed(server)
    # the first worker is SIGKILLed here: nothing more is written; the second takes over
    now += 1.0
    client.detach(now)
    resumed = await second.load(server.session_id, server.token, now)
    assert resumed is not None and not resumed.took_over
    restored = resumed.session
    assert restored.unacknowledged() == (b"s2", b"s3")
    attach(client, restored, now)
    assert restored.outgoing() == [(3, b"s3")]  # the client holds s2 already
    assert client.outgoing() == [(2, b"c2")]  # c2 was in the dead worker's inbox only
    assert client.take() == b"s2"
    client.on_message(3, b"s3")
    assert client.take() == b"s3"
    restored.on_message(2, b"c2")
    assert restored.take() == b"c2"
    assert client.duplicates_dropped == restored.duplicates_dropped == 0
    # the dead worker's store object, were it still running, is fenced off
    with pytest.raises(Fenced):
        await first.consumed(server)
    await second.consumed(restored)


async def test_a_wrong_token_is_refused_counted_across_workers_and_changes_nothing(
    workers: tuple[RedisStore, RedisStore],
) -> None:
    first, second = workers
    server = await first.open(0.0)
    seq = server.send(b"precious", 0.0)
    await first.sent(server, seq, b"precious")
    wrong = bytes(b ^ 0xFF for b in server.token)
    assert await second.load(server.session_id, wrong, 1.0) is None
    assert await first.load(server.session_id, b"", 1.0) is None
    assert await second.hijack_attempts() == 2
    await first.touch(server)  # still the owner: the epoch did not move
    resumed = await second.load(server.session_id, server.token, 1.0)
    assert resumed is not None
    assert resumed.session.unacknowledged() == (b"precious",)


async def test_an_unknown_session_is_not_found(workers: tuple[RedisStore, RedisStore]) -> None:
    first, _ = workers
    assert await first.load(SID, bytes(32), 0.0) is None
    assert await first.hijack_attempts() == 0


async def test_messages_stored_out_of_order_are_refused(
    workers: tuple[RedisStore, RedisStore],
) -> None:
    first, _ = workers
    server = await first.open(0.0)
    one, two = server.send(b"1", 0.0), server.send(b"2", 0.0)
    with pytest.raises(LocalProtocolError, match="out of order"):
        await first.sent(server, two, b"2")
    await first.sent(server, one, b"1")


async def test_a_dead_owners_session_vanishes_one_window_after_its_last_write(
    redis_socket: Path,
) -> None:
    client = redis_asyncio.Redis(unix_socket_path=str(redis_socket))
    try:
        store = RedisStore(client, SessionLimits(window=0.2))
        server = await store.open(0.0)
        seq = server.send(b"x", 0.0)
        await store.sent(server, seq, b"x")
        assert await store.load(server.session_id, server.token, 0.0) is not None
        await asyncio.sleep(0.4)
        assert await store.load(server.session_id, server.token, 0.5) is None
    finally:
        await client.aclose()


async def test_stored_enqueue_times_carry_over_to_the_new_owners_clock(
    redis_socket: Path,
) -> None:
    wall = [1000.0]
    clients = [redis_asyncio.Redis(unix_socket_path=str(redis_socket)) for _ in range(2)]
    try:
        first = RedisStore(clients[0], LIMITS, wall=lambda: wall[0])
        second = RedisStore(clients[1], LIMITS, wall=lambda: wall[0])
        server = await first.open(50.0)
        seq = server.send(b"old", 50.0)
        await first.sent(server, seq, b"old")
        wall[0] += 7.0  # the other worker's monotonic clock has another origin: 9000
        resumed = await second.load(server.session_id, server.token, 9000.0)
        assert resumed is not None
        ((_, _, enqueued_at),) = resumed.session.replay()
        assert enqueued_at == pytest.approx(9000.0 - 7.0)
        assert resumed.session.state is State.DETACHED
        assert resumed.session.attach(9000.0) == Resume(0, 0)
    finally:
        for client in clients:
            await client.aclose()
