"""Regression tests for the resumable-session defects of issue 12, on real loopback sockets."""

from __future__ import annotations

import asyncio

import pytest

import peerwatch
from peerwatch import ResumableConnection

pytestmark = pytest.mark.timeout(60)

FAST = {"interval": 0.2, "timeout": 5.0}
BIG = 256 * 1024


async def test_a_message_numbered_while_writing_is_paused_and_the_outbox_empty_is_written() -> None:
    """Issue 12, defect 1: the stall with large messages.

    The session numbers a message at once, but the link pulls it into its outbox
    only in a pass with a data budget. When the transport paused writing right
    after the outbox emptied, that message was neither in the outbox nor counted
    as pending, so ``resume_writing`` scheduled no pass and it was never written.
    The test drives the client into exactly that state (the server's application
    reads nothing until told), then numbers one more message.
    """
    gate = asyncio.Event()
    got: list[int] = []

    async def handler(session: ResumableConnection) -> None:
        await gate.wait()
        async for message in session:
            got.append(len(message))

    async with peerwatch.serve(handler, "127.0.0.1", 0, resume_window=30, **FAST) as server:
        conn = await peerwatch.connect(
            "127.0.0.1", server.port, resume=True, max_replay_bytes=512 * 1024 * 1024, **FAST
        )
        try:
            link = conn.link
            assert link is not None
            protocol = link.session_protocol
            sent = 0
            for _ in range(400):  # a loopback socket pair holds a few MiB at most
                await conn.enqueue(b"x" * BIG)
                sent += 1
                for _ in range(5):  # the flush pass runs at the next loop turns
                    await asyncio.sleep(0)
                if protocol.writing_paused and not protocol._outbox:
                    break
            assert protocol.writing_paused and not protocol._outbox, "state never reached"
            last = await conn.enqueue(b"y" * BIG)  # numbered now, written after the pause
            sent += 1
            gate.set()
            await asyncio.wait_for(conn.wait_acked(last.seq), 10)
            assert len(got) == sent and got == [BIG] * sent
        finally:
            gate.set()
            await conn.close()
