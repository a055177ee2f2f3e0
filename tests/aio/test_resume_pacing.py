"""How a resumable connection paces its peer: ACKs that keep a full send window moving."""

from __future__ import annotations

import asyncio

import pytest

import peerwatch
from peerwatch import ResumableConnection
from peerwatch.aio.connection import EAGER_ACK

pytestmark = pytest.mark.timeout(60)

FAST = {"interval": 0.2, "timeout": 1.0}


async def test_a_receiver_taking_a_long_run_of_messages_acks_before_it_yields() -> None:
    """As a plain connection does (``EAGER_ACK``): a consumer working through many waiting
    messages ACKs every ``EAGER_ACK`` of them at once, not at the next loop pass after the
    whole run, while the sender, its window full, would sit idle (issue 12)."""
    waiting = EAGER_ACK + 50
    written: list[int] = []

    async def handler(session: ResumableConnection) -> None:
        for _ in range(500):  # until a long run waits in the inbox
            if session.session.inbox >= waiting:
                break
            await asyncio.sleep(0.01)
        assert session.link is not None
        protocol = session.link.session_protocol
        before = protocol.bytes_out
        for _ in range(waiting):
            await session.recv()  # messages wait: no await here suspends
        written.append(protocol.bytes_out - before)
        async for _ in session:
            pass

    async with (
        peerwatch.serve(handler, "127.0.0.1", 0, resume_window=5.0, **FAST) as server,
        peerwatch.connect("127.0.0.1", server.port, resume=True, **FAST) as conn,
    ):
        for _ in range(waiting + 100):
            await conn.enqueue(b"x" * 100)
        await asyncio.wait_for(conn.drain(), 10)
    assert written and written[0] > 0  # the ACK went out during the run
