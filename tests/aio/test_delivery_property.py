"""Acknowledged means delivered: every ACKed message arrived exactly once and in order,
and on death the verdict holds exactly the messages that were not acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peerkit import Peer

import peerwatch

pytestmark = pytest.mark.timeout(180)


def read_records(path: Path) -> list[bytes]:
    data = path.read_bytes() if path.exists() else b""
    out, pos = [], 0
    while pos + 4 <= len(data):
        (size,) = struct.unpack_from("!I", data, pos)
        out.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    assert pos == len(data), "a record was cut: the receiver wrote a partial message"
    return out


async def exchange(
    spawn: type[Peer], out: Path, sizes: list[int], kill_after: int, chunk: int
) -> None:
    peer = spawn("record", "--out", str(out), "--kill-after", str(kill_after)).wait_listening()
    conn = await peerwatch.connect(
        "127.0.0.1", peer.port, interval=0.2, timeout=1.0, chunk_size=chunk
    )
    sent = [bytes([i % 251]) * size + i.to_bytes(4, "big") for i, size in enumerate(sizes)]
    for message in sent:
        await conn.enqueue(message)
    with contextlib.suppress(peerwatch.PeerDead):
        await asyncio.wait_for(conn.drain(), 20)
    if kill_after > len(sent):
        assert conn.verdict is None
        await conn.close()
        verdict = conn.verdict
        assert verdict is not None and verdict.undelivered == ()
    else:
        verdict = await asyncio.wait_for(conn.wait_closed(), 5)
        assert verdict.cause in (peerwatch.Cause.EOF, peerwatch.Cause.RESET)
    peer.stop()
    recorded = read_records(out)
    acked = len(sent) - len(verdict.undelivered)
    assert verdict.undelivered == tuple(sent[acked:])  # exactly the unacknowledged suffix
    assert recorded == sent[: len(recorded)]  # in order, exactly once, nothing invented
    assert acked <= len(recorded)  # nothing acknowledged that did not arrive
    assert len(recorded) == min(kill_after, len(sent))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 150_000), min_size=1, max_size=25),
    kill_at=st.floats(0.0, 1.2),
    chunk=st.integers(1_000, 65_536),
)
def test_acknowledged_prefix_and_undelivered_suffix(
    spawn: type[Peer], tmp_path: Path, sizes: list[int], kill_at: float, chunk: int
) -> None:
    out = tmp_path / f"record-{len(list(tmp_path.iterdir()))}"
    kill_after = max(1, round(kill_at * len(sizes)))  # > len(sizes): the receiver lives
    asyncio.run(exchange(spawn, out, sizes, kill_after, chunk))
