"""Real peer processes die, freeze and stall; each gets the right verdict, in time."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import pytest
from peerkit import Peer

import peerwatch
from peerwatch import Cause

pytestmark = pytest.mark.timeout(60)

FAST = {"interval": 0.2, "timeout": 1.0}


async def echo_once(conn: peerwatch.Connection, word: bytes = b"hi") -> None:
    await conn.send(word)
    assert await asyncio.wait_for(conn.recv(), 5) == word


async def test_killed_peer_is_eof_or_reset_within_100ms(spawn: type[Peer]) -> None:
    peer = spawn("echo").wait_listening()
    conn = await peerwatch.connect("127.0.0.1", peer.port, **FAST)
    await echo_once(conn)
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    peer.signal(signal.SIGKILL)
    verdict = await asyncio.wait_for(conn.wait_closed(), 5)
    assert verdict.cause in (Cause.EOF, Cause.RESET), verdict.describe()
    assert verdict.detected_at - killed_at < 0.100
    with pytest.raises(peerwatch.PeerDead) as raised:
        await conn.send(b"too late")
    assert raised.value.verdict is verdict


async def test_peer_close_is_goodbye(spawn: type[Peer]) -> None:
    peer = spawn("echo").wait_listening()
    conn = await peerwatch.connect("127.0.0.1", peer.port, **FAST)
    await conn.send(b"close")
    verdict = await asyncio.wait_for(conn.wait_closed(), 5)
    assert verdict.cause is Cause.GOODBYE
    assert verdict.goodbye_reason == "asked to close"
    assert [m async for m in conn] == []  # iteration ends quietly on GOODBYE


async def test_frozen_peer_is_hung_in_time_and_its_other_connections_survive(
    spawn: type[Peer],
) -> None:
    peer = spawn("echo", "--interval", "0.2", "--timeout", "1.0").wait_listening()
    watched = await peerwatch.connect("127.0.0.1", peer.port, **FAST)
    patient = await peerwatch.connect("127.0.0.1", peer.port, interval=0.2, timeout=10.0)
    await echo_once(watched)
    await echo_once(patient)
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    peer.signal(signal.SIGSTOP)
    verdict = await asyncio.wait_for(watched.wait_closed(), 5)
    peer.signal(signal.SIGCONT)
    # kernel alive, application frozen: HUNG, within timeout + 10 %
    assert verdict.cause is Cause.HUNG, verdict.describe()
    assert verdict.detected_at - stopped_at <= 1.0 * 1.1
    assert 1.0 <= verdict.silent_for <= 1.1
    assert verdict.tcp_info is not None and verdict.tcp_info.retransmits == 0
    # after SIGCONT the peer's other connection is unharmed, both ways
    await echo_once(patient, b"still there?")
    await asyncio.sleep(0.5)  # the resumed peer's timers fire late: it must forgive itself
    await echo_once(patient, b"and now?")
    assert patient.verdict is None
    await patient.close()


async def test_own_stall_blames_no_healthy_peer_and_is_reported(
    spawn: type[Peer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="peerwatch")
    served: list[peerwatch.Connection] = []

    async def blocking_handler(conn: peerwatch.Connection) -> None:
        served.append(conn)
        async for message in conn:
            if message == b"block":
                time.sleep(2 * FAST["timeout"])  # a handler that blocks the whole loop
            await conn.enqueue(message)

    server = await peerwatch.serve(blocking_handler, "127.0.0.1", 0, **FAST)
    echo_peer = spawn("echo", "--timeout", "10").wait_listening()
    outbound = await peerwatch.connect("127.0.0.1", echo_peer.port, **FAST)
    await echo_once(outbound)
    # the client process is patient (timeout 10 s): it will ask us to block, then talk again
    client = spawn("client", "--port", str(server.port), "--interval", "0.2", "--timeout", "10")
    line = await asyncio.get_running_loop().run_in_executor(None, client.read_line)
    assert line == "ALIVE None"
    await echo_once(outbound, b"after the stall")
    assert outbound.verdict is None
    assert outbound.stalls >= 1 and outbound.local_stall >= 1.5
    assert served and served[0].stalls >= 1
    assert served[0].verdict is None or served[0].verdict.cause is Cause.GOODBYE
    assert any("stalled" in r.getMessage() for r in caplog.records)
    await outbound.close()
    await server.shutdown()


async def test_unacknowledged_messages_are_in_the_verdict(spawn: type[Peer]) -> None:
    peer = spawn("echo").wait_listening()
    conn = await peerwatch.connect("127.0.0.1", peer.port, **FAST)
    await echo_once(conn)
    peer.signal(signal.SIGSTOP)
    pending = [await conn.enqueue(f"m{i}".encode()) for i in range(5)]
    with pytest.raises(peerwatch.PeerDead) as raised:
        await asyncio.wait_for(pending[-1], 5)
    peer.signal(signal.SIGCONT)
    assert raised.value.verdict.undelivered == tuple(f"m{i}".encode() for i in range(5))
    assert not any(d.acknowledged for d in pending)
