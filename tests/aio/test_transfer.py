"""No false verdict when the peer is slow but alive: a closed window is not a dead peer."""

from __future__ import annotations

import asyncio

import pytest
from peerkit import Peer

import peerwatch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MIB = 1024 * 1024


async def test_200mb_to_a_slow_reader_completes_with_both_sides_alive(spawn: type[Peer]) -> None:
    # the receiver takes 2 MiB, then sleeps 100 ms: its window closes again and again
    peer = spawn("slowread", "--batch", "2", "--pause", "0.1").wait_listening()
    conn = await peerwatch.connect("127.0.0.1", peer.port, interval=0.2, timeout=1.0)
    chunk = bytes(range(256)) * (MIB // 256)
    for _ in range(200):
        await conn.enqueue(chunk)
    await conn.send(b"done")
    total = await asyncio.wait_for(conn.recv(), 60)
    assert int(total) == 200 * MIB
    assert conn.verdict is None
    assert peer.proc.poll() is None
    assert conn.bytes_out > 200 * MIB
    await conn.close()
