"""Waiting for a connection's end: every caller gets the verdict, and a caller that gives
up (cancelled, or a ``wait_for`` timeout) takes nothing from the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import peerwatch
from peerwatch.core.verdicts import Cause

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def conn() -> AsyncIterator[peerwatch.Connection]:
    async def handler(served: peerwatch.Connection) -> None:
        await served.wait_closed()

    server = await peerwatch.serve(handler, "127.0.0.1", 0, interval=0.5, timeout=2.0)
    try:
        client = await peerwatch.connect("127.0.0.1", server.port, interval=0.5, timeout=2.0)
        try:
            yield client
        finally:
            if client.verdict is None:
                await client.close()
    finally:
        await server.shutdown()


async def test_a_cancelled_wait_closed_leaves_the_other_waiters_and_the_connection_alone(
    conn: peerwatch.Connection,
) -> None:
    gives_up = asyncio.ensure_future(conn.wait_closed())
    waits = asyncio.ensure_future(conn.wait_closed())
    await asyncio.sleep(0.05)
    gives_up.cancel()
    await asyncio.sleep(0.05)
    assert not waits.done() and not conn.closed.done()
    assert conn.verdict is None
    await conn.close("done")
    assert (await waits).cause is Cause.LOCAL
    assert conn.closed.result().cause is Cause.LOCAL
    assert gives_up.cancelled()


async def test_callers_that_time_out_are_not_kept_until_the_end(
    conn: peerwatch.Connection,
) -> None:
    for _ in range(100):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(conn.wait_closed(), 0.001)
    assert len(conn._waiters._ends or ()) <= 8
    await conn.close("done")
    assert (await conn.wait_closed()).cause is Cause.LOCAL  # after the end: at once
