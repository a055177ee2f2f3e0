"""Hostile bytes against both servers; a healthy canary must not notice (issue 8).

Each test runs against the asyncio server (``peerwatch.serve``) and the blocking
one (``peerwatch.sync.serve``), each in a child process (fuzzproc.py), and ends
with ``Target.check()``: the canary still echoes within ``CANARY_LATENCY``
and has no verdict, the server's RSS is bounded and its log has no traceback.
Random and mutated streams come from hypothesis with a bounded example count;
the abuse cases are the ones issue 8 reproduced.

Run it alone with ``.venv/bin/python -m pytest -q tests/fuzz``.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import pytest
from fuzzkit import Hostile, Target
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import peerwatch
from peerwatch import sync
from peerwatch.core.frames import (
    HEADER,
    MAX_REASON,
    PROTOCOL_VERSION,
    Ack,
    Data,
    Frame,
    Goodbye,
    GoodbyeCode,
    Hello,
    Kind,
    Ping,
    Pong,
    encode,
    encode_data,
    encode_goodbye,
    encode_hello,
    encode_ping,
    encode_pong,
)

pytestmark = pytest.mark.timeout(120)

MIB = 1 << 20


def hello(max_frame: int = MIB, max_message: int = 16 * MIB) -> bytes:
    return encode_hello(Hello(PROTOCOL_VERSION, 99, 0.2, 1.0, max_frame, max_message))


def goodbyes(frames: list[Frame]) -> list[Goodbye]:
    return [f for f in frames if isinstance(f, Goodbye)]


def refused(target: Target, payload: bytes) -> Goodbye:
    """Send ``payload``; the server must answer with exactly one GOODBYE and close."""
    with Hostile(target.port) as peer:
        peer.send(payload)
        said = goodbyes(peer.finish())
    assert len(said) == 1, said
    assert said[0].reason.isprintable()
    return said[0]


# --- random and mutated streams ------------------------------------------------------

FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,  # the same examples in every CI run: a failure reproduces
    suppress_health_check=[HealthCheck.too_slow],
)
frames = st.one_of(
    st.builds(Data, st.integers(0, 4), st.booleans(), st.binary(max_size=2000)),
    st.builds(Ack, st.integers(0, 4)),
    st.builds(Ping, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)),
    st.builds(Pong, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)),
    st.builds(Goodbye, st.integers(0, 9), st.text(max_size=80)),
    st.builds(
        Hello,
        st.just(PROTOCOL_VERSION),
        st.integers(0, 2**64 - 1),
        st.just(0.2),
        st.just(1.0),
        st.sampled_from([0, 64, 4095, 4096, MIB]),
        st.sampled_from([0, 1, 2, MIB]),
        flags=st.integers(0, 255),
    ),
)


def expect_an_ending(target: Target, stream: bytes) -> None:
    """Whatever the stream, the server ends that connection (GOODBYE or close) and only it."""
    with Hostile(target.port) as peer:
        peer.send(stream)
        for goodbye in goodbyes(peer.finish()):
            assert goodbye.reason.isprintable() and len(goodbye.reason) <= MAX_REASON


@FUZZ
@given(stream=st.binary(max_size=3000))
def test_random_bytes(target: Target, stream: bytes) -> None:
    expect_an_ending(target, stream)


@FUZZ
@given(stream=st.binary(max_size=3000))
def test_hello_then_random_bytes(target: Target, stream: bytes) -> None:
    expect_an_ending(target, hello() + stream)


@FUZZ
@given(
    sent=st.lists(frames, min_size=1, max_size=12),
    flips=st.lists(st.tuples(st.integers(0, 30_000), st.integers(1, 255)), max_size=4),
    cut=st.integers(0, 30_000),
)
def test_mutated_frames(
    target: Target, sent: list[Frame], flips: list[tuple[int, int]], cut: int
) -> None:
    stream = bytearray(hello() + b"".join(encode(f) for f in sent))
    for at, mask in flips:
        if at < len(stream):
            stream[at] ^= mask
    expect_an_ending(target, bytes(stream[: max(cut, 5)]))


def test_after_the_fuzzing_the_canary_and_the_server_are_healthy(target: Target) -> None:
    target.check()


# --- the abuse cases of issue 8 ------------------------------------------------------


def test_tiny_max_frame_is_refused(target: Target) -> None:
    said = refused(target, hello(max_frame=64) + encode_data(1, b"m" * (MIB - 100)))
    assert said.code is GoodbyeCode.PROTOCOL_ERROR
    assert "max_frame 64, below the floor of 4096 bytes" in said.reason
    target.check()


def test_echo_at_the_smallest_max_frame_does_not_hold_the_loop(target: Target) -> None:
    """4 MiB echoed in 4 KiB frames: the flush budget lets the canary through meanwhile."""
    messages = [bytes([i]) * (MIB - 100) for i in range(4)]
    with Hostile(target.port) as peer:
        peer.send(
            hello(max_frame=4096) + b"".join(encode_data(i + 1, m) for i, m in enumerate(messages))
        )

        def echoed(got: list[Frame]) -> int:
            return sum(len(f.payload) for f in got if isinstance(f, Data))

        peer.read_until(lambda got: echoed(got) >= sum(map(len, messages)), wait=20.0)
        data = [f for f in peer.frames if isinstance(f, Data)]
        assert echoed(peer.frames) == sum(map(len, messages))
        assert max(len(f.payload) for f in data) <= 4096 - 9  # fits the max_frame we announced
        assert b"".join(f.payload for f in data) == b"".join(messages)
        peer.send(encode_goodbye(GoodbyeCode.NORMAL, "done"))
        peer.finish()
    target.check()


def test_empty_chunks_are_refused(target: Target) -> None:
    said = refused(target, hello() + encode_data(1, b"", more=True) * 1000)
    assert said.code is GoodbyeCode.PROTOCOL_ERROR and "empty chunk" in said.reason
    target.check()


def test_two_byte_chunks_are_refused(target: Target) -> None:
    said = refused(target, hello() + encode_data(1, b"ab", more=True) * 20_000)
    assert said.code is GoodbyeCode.PROTOCOL_ERROR and "cut into more than" in said.reason
    target.check()


def test_unsolicited_pongs_do_not_poison_the_rtt(target: Target) -> None:
    with Hostile(target.port) as peer:
        # stamp 1: "sent" a microsecond after the loop clock's origin, hours ago
        peer.send(hello() + encode_pong(1, 1) * 1000 + encode_data(1, b"still here"))
        peer.read_until(lambda got: any(isinstance(f, Data) for f in got))
        peer.send(encode_goodbye(GoodbyeCode.NORMAL, "done"))
        peer.finish()
        line = target.ended(peer.local_port)
    rtt = line.split("rtt=")[1].split()[0]
    assert rtt == "None" or float(rtt) < 1.0, line  # was the loop clock: thousands of s
    target.check()


def test_a_long_goodbye_with_newlines_makes_one_short_log_line(target: Target) -> None:
    forged = "bye\n2026-11-30 00:00:00 INFO FORGED peer 10.0.0.9: all is well\n"
    reason = (forged + "x" * (MIB - 200)).encode()
    body = struct.pack("!H", GoodbyeCode.NORMAL) + reason
    with Hostile(target.port) as peer:
        peer.send(hello() + HEADER.pack(len(body), Kind.GOODBYE) + body)
        peer.finish()
        target.ended(peer.local_port)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("bye\\n" in ln for ln in target.server.err):
        time.sleep(0.05)
    logged = [line for line in target.server.err if "bye\\n2026-11-30" in line]
    assert len(logged) == 1, target.server.err[-5:]
    assert not [line for line in target.server.err if line.startswith("2026-11-30 00:00:00")]
    target.check()  # no line over LONGEST_LINE


def test_an_oversized_message_gets_message_too_big(target: Target) -> None:
    said = refused(target, hello() + encode_data(1, b"x" * (MIB - 100), more=True) * 3)
    assert said.code is GoodbyeCode.MESSAGE_TOO_BIG
    assert "exceeds max_message" in said.reason
    target.check()


def test_max_message_0_is_refused(target: Target) -> None:
    said = refused(target, hello(max_message=0))
    assert said.code is GoodbyeCode.PROTOCOL_ERROR and "max_message 0" in said.reason
    target.check()


def test_a_ping_flood_is_cut_off(target: Target) -> None:
    said = refused(target, hello() + b"".join(encode_ping(i, i) for i in range(5000)))
    assert said.code is GoodbyeCode.TOO_MANY_PINGS
    target.check()


# --- cases that need server8's items 8-10 (byte budgets, handshake allowance) --------


@pytest.mark.xfail(reason="needs issue 8 items 8-10 (branch server8)", strict=True)
def test_a_client_that_never_reads_cannot_grow_the_server(
    fresh: Callable[..., Target],
) -> None:
    """200 x 1 MiB echoed to a client that never reads grew the server by ~200 MiB."""
    target = fresh()
    with Hostile(target.port) as peer:
        peer.send(hello())
        message = b"n" * (MIB - 100)
        for seq in range(1, 201):
            if not peer.send(encode_data(seq, message)):
                break  # told GOODBYE: the budget did its job
        time.sleep(0.5)
        target.check()  # RSS within RSS_GROWTH, canary fine


@pytest.mark.xfail(reason="needs issue 8 items 8-10 (branch server8)", strict=True)
def test_silent_sockets_do_not_lock_out_real_peers(fresh: Callable[..., Target]) -> None:
    """150 sockets that never send HELLO took every slot of a max_connections=100 server."""
    target = fresh("--max-connections", "100")
    silent = [Hostile(target.port) for _ in range(150)]
    try:
        conn = sync.connect("127.0.0.1", target.port, interval=0.2, timeout=2.0)
        try:
            conn.send(b"let me in", timeout=5)
            assert conn.recv(timeout=5) == b"let me in"
        finally:
            if conn.verdict is None:
                conn.close(timeout=5)
    except peerwatch.PeerDead as exc:
        raise AssertionError(f"a real peer was refused: {exc}") from exc
    finally:
        for one in silent:
            one.close()
    target.check()
