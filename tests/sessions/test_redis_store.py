"""What only the Redis store has: ordered write-through, clocks of other workers, its URL.

The behaviour both stores share is ``test_store_contract.py``; these tests use
the same real redis-server on loopback (``storekit``).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from storekit import Stores, stores

from peerwatch.core.frames import Resume
from peerwatch.core.session import SessionLimits, State
from peerwatch.errors import ConfigError, LocalProtocolError

pytest.importorskip("redis.asyncio")
from peerwatch.sessions.redis import RedisStore, check_url, token_hash

pytestmark = pytest.mark.timeout(60)

LIMITS = SessionLimits(max_replay_bytes=1 << 20, max_replay_age=60.0, window=5.0)


@pytest.fixture
async def shared() -> AsyncIterator[Stores]:
    async with stores("redis", LIMITS) as made:
        yield made


def redis_worker(shared: Stores, **options: object) -> RedisStore:
    store = shared.worker(**options)
    assert isinstance(store, RedisStore)
    return store


async def test_messages_stored_out_of_order_are_refused(shared: Stores) -> None:
    store = redis_worker(shared)
    server = await store.open(0.0)
    assert server is not None
    one, two = server.send(b"1", 0.0), server.send(b"2", 0.0)
    with pytest.raises(LocalProtocolError, match="out of order"):
        await store.sent(server, two, b"2")
    await store.sent(server, one, b"1")
    await store.sent(server, two, b"2")


async def test_stored_enqueue_times_carry_over_to_the_new_owners_clock(shared: Stores) -> None:
    wall = [1000.0]
    first = redis_worker(shared, wall=lambda: wall[0])
    second = redis_worker(shared, wall=lambda: wall[0])
    server = await first.open(50.0)
    assert server is not None
    seq = server.send(b"old", 50.0)
    await first.sent(server, seq, b"old")
    wall[0] += 7.0  # the other worker's monotonic clock has another origin: 9000
    resumed = await second.resume(server.session_id, server.token, 9000.0)
    assert resumed is not None
    ((_, _, enqueued_at),) = resumed.session.replay()
    assert enqueued_at == pytest.approx(9000.0 - 7.0)
    assert resumed.session.state is State.DETACHED
    assert resumed.session.attach(9000.0) == Resume(0, 0)


async def test_redis_keeps_a_hash_of_the_token_never_the_token(shared: Stores) -> None:
    store = redis_worker(shared)
    server = await store.open(0.0)
    assert server is not None
    meta = await store.client.hgetall(f"peerwatch:session:{server.session_id.hex()}:meta")
    assert meta[b"token_hash"] == token_hash(server.token)
    assert not any(server.token in value for value in meta.values())


async def test_resuming_on_the_same_worker_keeps_the_same_session_object(shared: Stores) -> None:
    """The handler on this worker still holds it: a copy would split the session in two."""
    store = redis_worker(shared)
    server = await store.open(0.0)
    assert server is not None
    resumed = await store.resume(server.session_id, server.token, 1.0)
    assert resumed is not None and resumed.session is server


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis:/127.0.0.1:6379", "schemes"),
        ("http://127.0.0.1:6379/0", "schemes"),
        ("redis://127.0.0.1:63a9/0", "Port could not be cast"),
        ("redis://127.0.0.1:99999/0", "out of range"),
        ("redis://127.0.0.1:6379/x", "the database is a number"),
        ("redis://127.0.0.1:6379/0?sockettimeout=1", "unknown option"),
        ("redis:///0", "no host"),
        ("unix://", "no socket path"),
    ],
)
def test_a_mistyped_store_url_is_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as refused:
        check_url(url)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "redis://localhost", "rediss://h:1/2", "unix:///run/r.sock?db=3"],
)
def test_good_store_urls_pass(url: str) -> None:
    assert check_url(url) == url


async def test_a_unix_socket_store_url_works(tmp_path: Path) -> None:
    """TCP keepalive options on a Unix socket made redis-py refuse every call."""
    from peerwatch.sessions.redis import connect

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
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            await asyncio.sleep(0.01)
        client = connect(f"unix://{sock}?db=1", timeout=2.0)
        store = RedisStore(client, LIMITS)
        try:
            session = await store.open(0.0)
            assert session is not None
            assert await store.resume(session.session_id, session.token, 1.0) is not None
        finally:
            await store.aclose()
            await client.aclose()
    finally:
        proc.kill()
        proc.wait()
