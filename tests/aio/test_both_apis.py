"""Adapter behaviour written once, run against the asyncio API and the blocking one.

As uvloop's test mixins do: each test talks to ``api``, a small facade over
``peerwatch`` or ``peerwatch.sync`` (its blocking calls run in a worker thread,
so one async test body serves both). The peers are real processes.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any, Protocol

import pytest
from peerkit import Peer

import peerwatch
from peerwatch import Cause, sync

pytestmark = pytest.mark.timeout(60)

FAST: dict[str, Any] = {"interval": 0.2, "timeout": 1.0}


class Handle(Protocol):
    verdict: peerwatch.Verdict | None

    async def send(self, payload: bytes) -> None: ...
    async def enqueue(self, payload: bytes) -> None: ...
    async def recv(self) -> bytes: ...
    async def drain_iteration(self) -> list[bytes]: ...
    async def close(self) -> peerwatch.Verdict: ...


class AioHandle:
    def __init__(self, conn: peerwatch.Connection) -> None:
        self.conn = conn

    @property
    def verdict(self) -> peerwatch.Verdict | None:
        return self.conn.verdict

    async def send(self, payload: bytes) -> None:
        await self.conn.send(payload)

    async def enqueue(self, payload: bytes) -> None:
        await self.conn.enqueue(payload)

    async def recv(self) -> bytes:
        return await asyncio.wait_for(self.conn.recv(), 10)

    async def drain_iteration(self) -> list[bytes]:
        return [m async for m in self.conn]

    async def close(self) -> peerwatch.Verdict:
        return await self.conn.close("done")


class SyncHandle:
    def __init__(self, conn: sync.Connection) -> None:
        self.conn = conn

    @property
    def verdict(self) -> peerwatch.Verdict | None:
        return self.conn.verdict

    async def send(self, payload: bytes) -> None:
        await asyncio.to_thread(self.conn.send, payload, 10)

    async def enqueue(self, payload: bytes) -> None:
        await asyncio.to_thread(self.conn.enqueue, payload, 10)

    async def recv(self) -> bytes:
        return await asyncio.to_thread(self.conn.recv, 10)

    async def drain_iteration(self) -> list[bytes]:
        return await asyncio.to_thread(lambda: list(self.conn))

    async def close(self) -> peerwatch.Verdict:
        return await asyncio.to_thread(self.conn.close, "done")


async def aio_connect(port: int, **settings: Any) -> Handle:
    return AioHandle(await peerwatch.connect("127.0.0.1", port, **settings))


async def sync_connect(port: int, **settings: Any) -> Handle:
    return SyncHandle(await asyncio.to_thread(sync.connect, "127.0.0.1", port, **settings))


Connect = Callable[..., Any]


@pytest.fixture(params=["asyncio", "sync"])
def connect(request: pytest.FixtureRequest) -> Connect:
    return aio_connect if request.param == "asyncio" else sync_connect


async def test_round_trip_then_close_is_local(spawn: type[Peer], connect: Connect) -> None:
    peer = spawn("echo").wait_listening()
    conn = await connect(peer.port, **FAST)
    await conn.send(b"hi")
    assert await conn.recv() == b"hi"
    verdict = await conn.close()
    assert verdict.cause is Cause.LOCAL and verdict.detail == "closed by this side: done"


async def test_iteration_ends_quietly_on_goodbye(spawn: type[Peer], connect: Connect) -> None:
    peer = spawn("echo").wait_listening()
    conn = await connect(peer.port, **FAST)
    await conn.send(b"one")
    await conn.send(b"close")  # the echo peer says GOODBYE
    assert await conn.drain_iteration() == [b"one"]
    assert conn.verdict is not None and conn.verdict.cause is Cause.GOODBYE


async def test_a_killed_peer_ends_iteration_with_peer_dead_whether_fin_or_rst(
    spawn: type[Peer], connect: Connect
) -> None:
    """One rule: a peer that vanished raises, whichever its kernel sent (docs: QUIET_END)."""
    # FIN: the peer process read everything (our ACK of its echo too), then was killed;
    # killed at once, our ACK would still be unread and its kernel would send RST: the race
    idle = spawn("echo").wait_listening()
    fin = await connect(idle.port, interval=1.0, timeout=30.0)
    await fin.send(b"hi")
    assert await fin.recv() == b"hi"
    await asyncio.sleep(0.2)  # before the first PING (interval 1 s)
    idle.signal(signal.SIGKILL)
    with pytest.raises(peerwatch.PeerDead) as after_fin:
        await fin.drain_iteration()
    assert after_fin.value.verdict.cause is Cause.EOF
    # RST: our bytes were still unread in its receive buffer when it was killed
    frozen = spawn("echo").wait_listening()
    rst = await connect(frozen.port, interval=1.0, timeout=30.0)
    frozen.signal(signal.SIGSTOP)
    await asyncio.sleep(0.05)
    await rst.enqueue(b"x" * 1000)  # not acknowledged: the peer cannot read it
    await asyncio.sleep(0.2)  # the bytes reach the frozen peer's kernel
    frozen.signal(signal.SIGKILL)
    with pytest.raises(peerwatch.PeerDead) as after_rst:
        await rst.drain_iteration()
    assert after_rst.value.verdict.cause is Cause.RESET


async def test_a_misspelt_setting_is_a_config_error_naming_the_right_one(
    spawn: type[Peer], connect: Connect
) -> None:
    with pytest.raises(
        peerwatch.ConfigError, match=r"unknown setting 'intervall' \(did you mean 'interval'\?\)"
    ):
        await connect(1, intervall=0.5)  # fails before any connection is tried
