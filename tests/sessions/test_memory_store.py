"""The in-process session store: fresh credentials, token-checked resume, hijacks counted."""

from __future__ import annotations

import pytest

from peerwatch.core.frames import NO_SESSION_ID, Resume
from peerwatch.core.session import LostCause, SessionLimits, State
from peerwatch.errors import ConfigError
from peerwatch.sessions.memory import MemoryStore
from peerwatch.sessions.store import SessionStore

TICK = 0.25
LIMITS = SessionLimits(max_replay_bytes=1 << 20, max_replay_age=60.0, window=10.0)


async def test_new_sessions_get_distinct_unguessable_credentials() -> None:
    store = MemoryStore(LIMITS)
    sessions = [await store.open(0.0) for _ in range(100)]
    ids = {s.session_id for s in sessions if s is not None}
    tokens = {s.token for s in sessions if s is not None}
    assert len(ids) == len(tokens) == 100
    assert NO_SESSION_ID not in ids
    assert {len(i) for i in ids} == {16} and {len(t) for t in tokens} == {32}


async def test_resume_with_the_right_token_returns_the_detached_session() -> None:
    store = MemoryStore(LIMITS)
    session = await store.open(0.0)
    assert session is not None
    resumed = await store.resume(session.session_id, session.token, TICK)
    assert resumed is not None
    assert resumed.session is session and not resumed.took_over
    assert session.state is State.DETACHED


async def test_a_hijack_is_refused_counted_and_leaves_the_real_session_untouched() -> None:
    now = 0.0
    store = MemoryStore(LIMITS)
    session = await store.open(now)
    assert session is not None
    session.attach(now)
    session.on_resume(Resume(0, 0), now)
    session.send(b"precious", now)
    now += TICK
    wrong = bytes(b ^ 1 for b in session.token)
    assert await store.resume(session.session_id, wrong, now) is None
    assert await store.resume(session.session_id, b"", now) is None
    assert store.hijack_attempts == 2
    assert session.state is State.ATTACHED
    assert session.unacknowledged() == (b"precious",)
    assert session.outgoing() == [(1, b"precious")]


async def test_an_unknown_id_is_refused_without_counting_a_hijack() -> None:
    store = MemoryStore(LIMITS)
    assert await store.resume(bytes(range(16)), bytes(32), 0.0) is None
    assert store.hijack_attempts == 0


async def test_resuming_a_still_attached_session_takes_it_over() -> None:
    store = MemoryStore(LIMITS)
    session = await store.open(0.0)
    assert session is not None
    session.attach(0.0)
    resumed = await store.resume(session.session_id, session.token, TICK)
    assert resumed is not None and resumed.took_over
    assert session.state is State.DETACHED


async def test_a_detached_session_expires_after_the_window_and_is_reported_once() -> None:
    now = 0.0
    store = MemoryStore(LIMITS)
    session = await store.open(now)
    assert session is not None
    session.send(b"unacked", now)
    now += LIMITS.window - TICK
    assert await store.expire(now) == []
    now += TICK
    ((session_id, lost),) = await store.expire(now)
    assert session_id == session.session_id
    assert lost.cause is LostCause.WINDOW and lost.unacknowledged == (b"unacked",)
    assert await store.expire(now + TICK) == []
    assert await store.resume(session.session_id, session.token, now) is None


async def test_the_store_refuses_new_sessions_past_its_cap() -> None:
    store = MemoryStore(LIMITS, max_sessions=2)
    first, second = await store.open(0.0), await store.open(0.0)
    assert first is not None and second is not None
    assert await store.open(0.0) is None
    await store.forget(first.session_id)
    assert await store.open(0.0) is not None


async def test_a_zero_cap_is_refused() -> None:
    with pytest.raises(ConfigError):
        MemoryStore(LIMITS, max_sessions=0)


async def test_memory_store_offers_the_store_interface() -> None:
    store: SessionStore = MemoryStore(LIMITS)  # mypy checks the Protocol
    assert await store.open(0.0) is not None


async def test_a_session_attached_again_is_not_expired_by_its_old_deadline() -> None:
    now = 0.0
    store = MemoryStore(LIMITS)
    session = await store.open(now)
    assert session is not None
    session.attach(now)
    session.on_resume(Resume(0, 0), now)
    now += LIMITS.window + TICK
    assert await store.expire(now) == []
    assert await store.resume(session.session_id, session.token, now) is not None


async def test_a_session_detached_again_expires_one_window_after_the_last_detach() -> None:
    now = 0.0
    store = MemoryStore(LIMITS)
    session = await store.open(now)
    assert session is not None
    session.attach(now)
    session.on_resume(Resume(0, 0), now)
    now += LIMITS.window / 2
    session.detach(now)
    await store.park(session)
    detached_at = now
    now = LIMITS.window + TICK  # past the first deadline (from open), not the second
    assert await store.expire(now) == []
    assert store.next_deadline() == detached_at + LIMITS.window
    ((_, lost),) = await store.expire(detached_at + LIMITS.window)
    assert lost.cause is LostCause.WINDOW


async def test_a_mass_expiry_is_cut_into_batches_and_loses_nobody_twice() -> None:
    store = MemoryStore(LIMITS)
    opened = {s.session_id for s in [await store.open(0.0) for _ in range(50)] if s is not None}
    late = LIMITS.window + TICK
    batches = [await store.expire(late, limit=20) for _ in range(4)]
    assert [len(b) for b in batches] == [20, 20, 10, 0]
    assert {session_id for batch in batches for session_id, _ in batch} == opened
    assert store.next_deadline() is None and len(store) == 0
