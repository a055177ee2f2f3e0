"""One contract, both session stores: in-process and Redis (a real redis-server on loopback).

The store is driven as the asyncio server adapter drives it (``sessions/store.py``'s
module docstring): open, resume with the token, the write-through hooks when
``write_through``, park, expire, forget. Times are real ``time.monotonic()``
values with a window of a fraction of a second, because Redis keeps time with
its own clock (TTL) and the in-process store with ours: both must agree.

The tests marked *shared* only make sense for a store two workers share:
fencing, a worker's death, a take-over. The outage tests stop or freeze the
real redis-server mid-session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from storekit import Stores, attach, client_of, stores

from peerwatch.core.session import LostCause, Session, SessionLimits, State
from peerwatch.sessions.store import Fenced, SessionStore, StoreFailed

pytest.importorskip("redis.asyncio")
pytestmark = pytest.mark.timeout(60)

WINDOW = 0.4
LIMITS = SessionLimits(max_replay_bytes=1 << 20, max_replay_age=60.0, window=WINDOW)


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    async with stores(request.param, LIMITS) as made:
        yield made


@pytest.fixture
async def shared() -> AsyncIterator[Stores]:
    async with stores("redis", LIMITS) as made:
        yield made


def now() -> float:
    return time.monotonic()


async def opened(store: SessionStore) -> tuple[Session, Session]:
    """A new session (server side, ATTACHED) and its client, as after the first HELLO."""
    t = now()
    server = await store.open(t)
    assert server is not None
    client = client_of(server, LIMITS, t)
    attach(server, client, t)
    return server, client


async def send(store: SessionStore, session: Session, *payloads: bytes) -> None:
    """The application sends: kept by the store before the session numbers it."""
    for payload in payloads:
        if store.write_through:
            await store.sent(session, session.next_seq, payload)
        session.send(payload, now())


async def take(store: SessionStore, session: Session) -> bytes | None:
    """The application takes the next message: recorded before the session takes it."""
    if session.inbox and store.write_through:
        await store.consumed(session, session.consumed_through + 1)
    return session.take()


async def ack(store: SessionStore, session: Session, through: int) -> None:
    session.on_ack(through)
    if store.write_through:
        await store.acked(session)


async def detach(store: SessionStore, session: Session) -> None:
    session.detach(now())
    await store.park(session)


async def expire_until(store: SessionStore, seconds: float) -> list[bytes]:
    """Drive ``expire`` as the adapter's timer would for ``seconds``; the ids it ended."""
    ended: list[bytes] = []
    deadline = now() + seconds
    while now() < deadline:
        ended += [session_id for session_id, _ in await store.expire(now())]
        await asyncio.sleep(0.02)
    return ended


# ------------------------------------------------------------------ both stores


async def test_new_sessions_get_distinct_credentials(backend: Stores) -> None:
    store = backend.worker()
    sessions = [await store.open(now()) for _ in range(20)]
    assert len({s.session_id for s in sessions if s is not None}) == 20
    assert len({s.token for s in sessions if s is not None}) == 20
    assert all(s is not None and s.state is State.DETACHED for s in sessions)


async def test_a_resumed_session_carries_the_books_of_both_directions(backend: Stores) -> None:
    first, second = backend.worker(), backend.worker()
    server, client = await opened(first)
    await send(first, server, b"s1", b"s2", b"s3")
    for seq, payload in server.outgoing()[:2]:  # s3 is lost in flight with the connection
        client.on_message(seq, payload)
    assert client.take() == b"s1"
    ack_through = client.ack_due()
    assert ack_through == 1
    await ack(first, server, ack_through)
    client.send(b"c1", now())
    client.send(b"c2", now())
    for seq, payload in client.outgoing():
        server.on_message(seq, payload)
    assert await take(first, server) == b"c1"
    # the connection dies; the client comes back (to the other worker, when there is one)
    client.detach(now())
    await detach(first, server)
    resumed = await second.resume(server.session_id, server.token, now())
    assert resumed is not None and not resumed.took_over
    again = resumed.session
    assert again.state is State.DETACHED
    assert again.unacknowledged() == (b"s2", b"s3")
    attach(again, client, now())
    assert again.outgoing() == [(3, b"s3")]  # the client holds s2 already
    replayed = client.outgoing()
    if backend.shared:  # rebuilt from Redis: c2 was only in the dead worker's inbox
        assert replayed == [(2, b"c2")]  # c1 was taken: never again
        again.on_message(*replayed[0])
    else:  # the same object: c2 waits in its inbox
        assert replayed == []
    client.on_message(3, b"s3")
    assert [client.take(), client.take()] == [b"s2", b"s3"]
    assert await take(second, again) == b"c2"
    assert again.take() is None
    assert client.duplicates_dropped == 0


async def test_a_wrong_token_is_refused_counted_and_changes_nothing(backend: Stores) -> None:
    first, second = backend.worker(), backend.worker()
    server, _ = await opened(first)
    await send(first, server, b"precious")
    wrong = bytes(b ^ 0xFF for b in server.token)
    assert await second.resume(server.session_id, wrong, now()) is None
    assert await second.resume(server.session_id, b"", now()) is None
    assert second.hijack_attempts == 2
    assert server.state is State.ATTACHED
    await send(first, server, b"more")  # still the owner: a refused hijack moved nothing
    resumed = await second.resume(server.session_id, server.token, now())
    assert resumed is not None
    assert resumed.session.unacknowledged() == (b"precious", b"more")


async def test_an_unknown_id_is_refused_without_counting_a_hijack(backend: Stores) -> None:
    store = backend.worker()
    assert await store.resume(bytes(range(1, 17)), bytes(32), now()) is None
    assert store.hijack_attempts == 0


async def test_a_detached_session_ends_one_window_later_with_its_tail(backend: Stores) -> None:
    store = backend.worker()
    server, _ = await opened(store)
    await send(store, server, b"a", b"b")
    await ack(store, server, 0)
    await detach(store, server)
    parked_at = now()
    assert await store.expire(now()) == []
    ended = []
    while not ended and now() < parked_at + 5 * WINDOW:
        ended = await store.expire(now())
        await asyncio.sleep(0.02)
    ((session_id, lost),) = ended
    assert now() - parked_at >= WINDOW
    assert session_id == server.session_id
    assert lost.cause is LostCause.WINDOW
    assert lost.unacknowledged == (b"a", b"b") and lost.first_seq == 1
    assert await store.resume(server.session_id, server.token, now()) is None
    assert await store.expire(now() + WINDOW) == []  # reported once


async def test_an_attached_session_outlives_the_window(backend: Stores) -> None:
    """Idle but attached: the store must keep it (Redis: its TTL is renewed)."""
    store = backend.worker()
    server, _ = await opened(store)
    await send(store, server, b"kept")
    assert await expire_until(store, 3 * WINDOW) == []
    other = backend.worker()
    resumed = await other.resume(server.session_id, server.token, now())
    assert resumed is not None and resumed.session.unacknowledged() == (b"kept",)


async def test_a_forgotten_session_cannot_be_resumed(backend: Stores) -> None:
    store = backend.worker()
    server, _ = await opened(store)
    await store.forget(server.session_id)
    assert await store.resume(server.session_id, server.token, now()) is None


async def test_new_sessions_past_the_cap_are_refused(backend: Stores) -> None:
    store = backend.worker(max_sessions=2)
    first, second = await store.open(now()), await store.open(now())
    assert first is not None and second is not None
    assert await store.open(now()) is None
    await store.forget(first.session_id)
    assert await store.open(now()) is not None


# ------------------------------------------------------------ shared stores only


async def test_the_worker_that_lost_a_session_is_fenced_off(shared: Stores) -> None:
    first, second = shared.worker(), shared.worker()
    server, _ = await opened(first)
    await send(first, server, b"one")
    # the client reconnected to the second worker before the first noticed anything
    resumed = await second.resume(server.session_id, server.token, now())
    assert resumed is not None
    with pytest.raises(Fenced):
        await send(first, server, b"from the old owner")
    again = resumed.session
    client = client_of(again, LIMITS, now())
    attach(again, client, now())
    await send(second, again, b"two")
    third = shared.worker()
    latest = await third.resume(server.session_id, server.token, now())
    assert latest is not None
    assert latest.session.unacknowledged() == (b"one", b"two")  # nothing of the old owner's


async def test_the_old_owner_neither_forgets_nor_expires_a_taken_over_session(
    shared: Stores,
) -> None:
    first, second = shared.worker(), shared.worker()
    server, _ = await opened(first)
    await send(first, server, b"x")
    await detach(first, server)
    assert await second.resume(server.session_id, server.token, now()) is not None
    assert await expire_until(first, 2 * WINDOW) == []  # its deadline passed: not its to end
    await first.forget(server.session_id)
    assert await shared.worker().resume(server.session_id, server.token, now()) is not None


async def test_a_dead_workers_parked_session_vanishes_one_window_later(shared: Stores) -> None:
    from peerwatch.sessions.redis import ttl_seconds

    first = shared.worker()
    server, _ = await opened(first)
    await send(first, server, b"x")
    await detach(first, server)
    del first  # SIGKILLed: nobody renews, nobody ends it; Redis's TTL does
    await asyncio.sleep(ttl_seconds(WINDOW) + 0.2)
    assert await shared.worker().resume(server.session_id, server.token, now()) is None


async def test_hijacks_are_counted_across_workers(shared: Stores) -> None:
    from peerwatch.sessions.redis import RedisStore

    first, second = shared.worker(), shared.worker()
    assert isinstance(first, RedisStore) and isinstance(second, RedisStore)
    server, _ = await opened(first)
    assert await first.resume(server.session_id, bytes(32), now()) is None
    assert await second.resume(server.session_id, bytes(32), now()) is None
    assert first.hijack_attempts == second.hijack_attempts == 1
    assert await first.shared_hijack_attempts() == 2


# ------------------------------------------------------------------ store outage


async def test_a_stopped_redis_is_a_precise_error_on_every_call(shared: Stores) -> None:
    store = shared.worker()
    server, _ = await opened(store)
    await send(store, server, b"kept")
    assert shared.redis is not None
    shared.redis.stop()
    for call in (
        send(store, server, b"lost?"),
        store.resume(server.session_id, server.token, now()),
        store.open(now()),
    ):
        with pytest.raises(StoreFailed) as failed:
            await call
        message = str(failed.value)
        assert message.startswith(f"session store redis 127.0.0.1:{shared.redis.port}/0")
        assert "unavailable while" in message and "\n" not in message
    # the message that could not be kept never entered the session: the caller still has it
    assert server.unacknowledged() == (b"kept",)


async def test_a_hung_redis_fails_the_call_within_the_timeout(shared: Stores) -> None:
    from storekit import REDIS_TIMEOUT

    store = shared.worker()
    server, _ = await opened(store)
    shared.freeze()
    started = now()
    with pytest.raises(StoreFailed, match="unavailable while keeping message 1"):
        await send(store, server, b"into the void")
    assert now() - started < REDIS_TIMEOUT + 2.0
    shared.thaw()


async def test_books_that_vanished_from_redis_are_a_store_failure_not_a_take_over(
    shared: Stores,
) -> None:
    store = shared.worker()
    server, _ = await opened(store)
    await send(store, server, b"one")
    assert shared.redis is not None
    probe = shared.worker()
    from peerwatch.sessions.redis import RedisStore

    assert isinstance(probe, RedisStore)
    await probe.client.flushall()  # what a Redis restart without persistence leaves
    with pytest.raises(StoreFailed, match="lost the session"):
        await send(store, server, b"two")


async def test_a_session_that_ended_cannot_be_resumed_even_before_it_is_forgotten(
    backend: Stores,
) -> None:
    store = backend.worker()
    server, _ = await opened(store)
    server.on_peer_lost("the peer gave up", now())  # ended; the adapter forgets it a moment later
    assert await store.resume(server.session_id, server.token, now()) is None
