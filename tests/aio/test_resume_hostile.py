"""Hostile peers against a resumable server: each ends in a precise verdict for itself only."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

import pytest
from resumekit import raw_exchange, session_hello

import peerwatch
from peerwatch import Cause, PeerDead, ResumableConnection
from peerwatch.core.frames import (
    NO_SESSION_ID,
    Goodbye,
    GoodbyeCode,
    Hello,
    Resume,
    encode_ack,
    encode_data,
    encode_hello,
    encode_resume,
)

pytestmark = pytest.mark.timeout(60)

FAST = {"interval": 0.2, "timeout": 1.0}


class Recorder:
    """An echo handler that keeps every session's end."""

    def __init__(self) -> None:
        self.ends: list[peerwatch.Verdict] = []
        self.sessions = 0

    async def __call__(self, session: ResumableConnection) -> None:
        self.sessions += 1
        try:
            async for message in session:
                await session.enqueue(message)
        except PeerDead:
            pass
        self.ends.append(await session.wait_closed())


def goodbye(frames: Sequence[object]) -> Goodbye:
    said = [f for f in frames if isinstance(f, Goodbye)]
    assert len(said) == 1, frames
    return said[0]


async def test_a_hijack_is_refused_like_an_unknown_id_counted_and_the_real_session_untouched() -> (
    None
):
    handler = Recorder()
    async with (
        peerwatch.serve(handler, "127.0.0.1", 0, resume_window=5.0, **FAST) as server,
        peerwatch.connect("127.0.0.1", server.port, resume=True, **FAST) as conn,
    ):
        await conn.send(b"mine")
        assert await conn.recv() == b"mine"
        assert conn.session_id is not None
        wrong_token = os.urandom(32)
        hijack = await raw_exchange(
            server.port, session_hello(conn.session_id, wrong_token) + encode_resume(1, 1)
        )
        unknown = await raw_exchange(
            server.port, session_hello(os.urandom(16), wrong_token) + encode_resume(0, 0)
        )
        for frames in (hijack, unknown):  # the same answer: a prober learns nothing
            hello = frames[0]
            assert isinstance(hello, Hello) and hello.session_id == NO_SESSION_ID
            assert goodbye(frames).code is GoodbyeCode.SESSION_UNKNOWN
            assert not any(isinstance(f, Resume) for f in frames)
        assert server.hijack_attempts == 1
        await conn.send(b"still mine")
        assert await conn.recv() == b"still mine"
        assert conn.history == []  # the real connection never noticed


async def test_a_resume_that_contradicts_the_books_ends_that_session_only() -> None:
    handler = Recorder()
    async with (
        peerwatch.serve(handler, "127.0.0.1", 0, resume_window=5.0, **FAST) as server,
        peerwatch.connect("127.0.0.1", server.port, resume=True, **FAST) as bystander,
    ):
        opened = await raw_exchange(server.port, session_hello() + encode_resume(0, 0), 0.5)
        hello = opened[0]
        assert isinstance(hello, Hello) and hello.session_id != NO_SESSION_ID
        assert Resume(0, 0) in opened
        # consumed_through above received_through, and above anything ever sent
        frames = await raw_exchange(
            server.port, session_hello(hello.session_id, hello.token) + encode_resume(5, 7)
        )
        said = goodbye(frames)
        assert said.code is GoodbyeCode.SESSION_LOST
        assert said.reason.startswith("INCONSISTENT: inconsistent RESUME: consumed_through 7")
        await asyncio.sleep(0.1)
        lost = [v for v in handler.ends if v.cause is Cause.SESSION_LOST]
        assert len(lost) == 1 and lost[0].detail.startswith("INCONSISTENT: ")
        await bystander.send(b"unaffected")
        assert await bystander.recv() == b"unaffected"
        assert bystander.history == []


async def test_session_frames_out_of_order_are_refused_by_name() -> None:
    handler = Recorder()
    async with peerwatch.serve(handler, "127.0.0.1", 0, resume_window=5.0, **FAST) as server:
        cases = {
            "plain HELLO": (
                encode_hello(Hello(1, 7, 0.2, 1.0, 1 << 20, 1 << 20)),
                "this server serves resumable sessions only",
            ),
            "DATA before RESUME": (
                session_hello() + encode_data(1, b"early"),
                "DATA while the session is not yet known (RESUME comes first)",
            ),
            "two RESUMEs": (
                session_hello() + encode_resume(0, 0) + encode_resume(0, 0),
                "RESUME",
            ),
        }
        for name, (data, reason) in cases.items():
            said = goodbye(await raw_exchange(server.port, data))
            assert said.code is GoodbyeCode.PROTOCOL_ERROR, name
            assert reason in said.reason, (name, said.reason)
        after_resume = {  # sent once the server's HELLO and RESUME are in
            "a gap in DATA": (encode_data(2, b"gap"), "DATA with sequence 2, expected 1"),
            "an ACK of nothing sent": (encode_ack(1), "ACK for sequence 1, but only 0"),
            "a second RESUME": (encode_resume(0, 0), "RESUME while the session is attached"),
        }
        for name, (data, reason) in after_resume.items():
            frames = await raw_exchange(
                server.port, session_hello() + encode_resume(0, 0), then=data
            )
            said = goodbye(frames)
            assert said.code is GoodbyeCode.PROTOCOL_ERROR, name
            assert reason in said.reason, (name, said.reason)


async def test_a_flood_of_bogus_resumes_is_refused_one_by_one_and_serving_goes_on() -> None:
    handler = Recorder()
    async with (
        peerwatch.serve(handler, "127.0.0.1", 0, resume_window=5.0, **FAST) as server,
        peerwatch.connect("127.0.0.1", server.port, resume=True, **FAST) as conn,
    ):
        attempts = [
            raw_exchange(server.port, session_hello(os.urandom(16), os.urandom(32)))
            for _ in range(200)
        ]
        answers = await asyncio.gather(*attempts)
        assert all(goodbye(a).code is GoodbyeCode.SESSION_UNKNOWN for a in answers)
        assert server.hijack_attempts == 0
        assert handler.sessions == 1
        await conn.send(b"after the flood")
        assert await conn.recv() == b"after the flood"


async def test_a_resumable_client_against_a_plain_server_fails_at_once_by_name() -> None:
    async def plain(conn: peerwatch.Connection) -> None:
        async for message in conn:
            await conn.send(message)

    async with peerwatch.serve(plain, "127.0.0.1", 0, **FAST) as server:
        with pytest.raises(PeerDead) as caught:
            await peerwatch.connect("127.0.0.1", server.port, resume=True, **FAST)
    verdict = caught.value.verdict
    assert verdict.cause is Cause.PROTOCOL
    assert "peer does not support sessions (plain HELLO)" in verdict.detail


async def test_a_plain_client_against_a_resumable_server_is_told_why() -> None:
    async with peerwatch.serve(Recorder(), "127.0.0.1", 0, resume_window=5.0, **FAST) as server:
        with pytest.raises(PeerDead) as caught:
            conn = await peerwatch.connect("127.0.0.1", server.port, **FAST)
            await conn.recv()
    assert "serves resumable sessions only" in caught.value.verdict.detail
