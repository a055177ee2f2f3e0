"""The session's batched bookkeeping (issue 12) against a per-message model.

The replay buffer keeps payloads only (seqs are consecutive) and one enqueue time
per age step; the inbox grows per read (``on_run``); ``offer`` checks the window and
the room and numbers in one call. Each is run here beside the obvious per-message
model, with a fake clock (``now += step``), and must agree with it exactly: the
same seqs, bytes and payloads, and an age bound that fires never late and at most
one age step early.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.core.frames import Resume as ResumeFrame
from peerwatch.core.session import AGE_STEPS, LostCause, Session, SessionLimits
from peerwatch.errors import RemoteProtocolError

SID = bytes(range(1, 17))
TOKEN = bytes(range(32, 64))
LIMITS = SessionLimits(max_replay_bytes=2_000, max_replay_age=10.0, window=30.0)
STEP = LIMITS.max_replay_age / AGE_STEPS


def attached(now: float = 0.0) -> Session:
    session = Session(SID, TOKEN, LIMITS, now)
    session.attach(now)
    session.on_resume(ResumeFrame(0, 0), now)
    return session


# what the sender does, with the time it waits before each step (fake clock)
sender_step = st.one_of(
    st.tuples(st.just("offer"), st.integers(0, 300), st.floats(0.0, 0.05)),
    st.tuples(st.just("write"), st.just(0), st.floats(0.0, 0.05)),
    st.tuples(st.just("ack"), st.integers(0, 8), st.floats(0.0, 0.05)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(sender_step, max_size=80), st.integers(1, 12))
def test_the_replay_buffer_agrees_with_a_per_message_model(
    steps: list[tuple[str, int, float]], window: int
) -> None:
    session = attached()
    model: list[tuple[int, bytes, float]] = []  # (seq, payload, enqueued_at) unacknowledged
    written = acked = 0
    now = 0.0
    for name, arg, wait in steps:
        now += wait
        if name == "offer":
            payload = bytes([len(model) % 256]) * arg
            held = sum(len(p) for _, p, _ in model)
            fits = len(model) < window and (not model or held + arg <= LIMITS.max_replay_bytes)
            seq = session.offer(payload, now, window)
            if fits:
                assert seq == (model[-1][0] if model else acked) + 1
                model.append((seq, payload, now))
            else:
                assert seq == 0  # nothing changed: the sender waits
        elif name == "write":
            first, payloads = session.outgoing_run()
            unwritten = [(s, p) for s, p, _ in model if s > written]
            assert list(enumerate(payloads, first)) == unwritten
            written = max([written] + [s for s, _ in unwritten])
        else:  # a cumulative ACK of some of what was written
            through = min(acked + arg, written)
            released = session.on_ack(through)
            assert released == sum(1 for s, _, _ in model if s <= through)
            model = [m for m in model if m[0] > through]
            acked = max(acked, through)
        kept = session.replay()
        assert [(s, p) for s, p, _ in kept] == [(s, p) for s, p, _ in model]
        assert session.replay_bytes == sum(len(p) for _, p, _ in model)
        assert session.in_flight == len(model)
        for (_, _, stamped), (_, _, enqueued_at) in zip(kept, model, strict=True):
            # the start of its age step: never later than the message, at most a step before
            assert enqueued_at - STEP <= stamped <= enqueued_at
        timer = session.get_timer()
        if model:
            assert timer is not None
            oldest = model[0][2] + LIMITS.max_replay_age
            assert oldest - STEP <= timer <= oldest  # never late, at most one step early
        else:
            assert timer is None  # attached, nothing held: no deadline


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 0.02), min_size=1, max_size=30), st.integers(0, 29))
def test_the_age_bound_ends_the_session_for_its_oldest_message_never_late(
    waits: list[float], acked: int
) -> None:
    session = attached()
    now, times = 0.0, []
    for wait in waits:
        now += wait
        session.offer(b"m", now, 1000)
        times.append(now)
    session.outgoing_run()
    acked = min(acked, len(times) - 1)
    session.on_ack(acked)
    oldest = times[acked]
    deadline = session.get_timer()
    assert deadline is not None and oldest + LIMITS.max_replay_age - STEP <= deadline
    session.handle_timer(deadline - 1e-6)
    assert session.lost is None
    session.handle_timer(oldest + LIMITS.max_replay_age)
    assert session.lost is not None and session.lost.cause is LostCause.REPLAY_EXPIRED
    assert f"message {acked + 1} unacknowledged" in session.lost.detail
    assert session.lost.first_seq == acked + 1
    assert len(session.lost.unacknowledged) == len(times) - acked


def test_a_run_of_messages_is_inboxed_at_once_and_its_replayed_head_dropped() -> None:
    session = attached()
    assert session.on_run(1, [b"a", b"bb", b"ccc"]) == 3
    assert (session.received_through, session.inbox, session.inbox_bytes) == (3, 3, 6)
    # a replay after a cut: 2 and 3 are held already, 4 and 5 are new
    assert session.on_run(2, [b"bb", b"ccc", b"dddd", b"e"]) == 2
    assert session.duplicates_dropped == 2
    assert (session.received_through, session.inbox_bytes) == (5, 11)
    assert [session.take() for _ in range(5)] == [b"a", b"bb", b"ccc", b"dddd", b"e"]
    assert session.inbox_bytes == 0 and session.consumed_through == 5
    assert session.on_run(1, [b"old"]) == 0  # all of it held already
    assert session.duplicates_dropped == 3


def test_a_run_that_leaves_a_gap_is_a_protocol_error_and_changes_nothing() -> None:
    session = attached()
    session.on_run(1, [b"a"])
    with pytest.raises(RemoteProtocolError, match="DATA with sequence 3, expected 2"):
        session.on_run(3, [b"c", b"d"])
    assert (session.received_through, session.inbox, session.inbox_bytes) == (1, 1, 1)


def test_offer_waits_at_the_window_and_at_the_replay_bound_but_one_message_always_fits() -> None:
    session = attached()
    big = b"x" * (LIMITS.max_replay_bytes + 1)
    assert session.offer(big, 0.0, 4) == 1  # alone, it may exceed the bound
    assert session.offer(b"y", 0.0, 4) == 0  # nothing else while it is held
    assert (session.next_seq, session.replay_bytes) == (2, len(big))
    session.outgoing_run()
    session.on_ack(1)
    assert [session.offer(b"z", 0.0, 2) for _ in range(3)] == [2, 3, 0]  # window of 2
