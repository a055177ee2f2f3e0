"""Many verdicts at one instant (issue 13): each is decided and told before the close work.

A timer pass that reaches verdicts of silence tells them (handlers wake) first and writes
the GOODBYEs and closes the transports in one callback after the pass. What must not
change: every one of them still gets GOODBYE and EOF, hands back what the peer never
acknowledged, and a healthy peer among them gets no verdict.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator

import pytest

import peerwatch
from peerwatch import Cause, Verdict
from peerwatch.core.decoder import Decoder
from peerwatch.core.frames import PROTOCOL_VERSION, Goodbye, Hello, encode_hello, encode_ping

pytestmark = pytest.mark.timeout(60)

SILENT = 200
HEALTHY = 10
INTERVAL, TIMEOUT = 0.25, 1.0
HELLO = encode_hello(Hello(PROTOCOL_VERSION, 42, INTERVAL, TIMEOUT, 1 << 20, 1 << 20))
UNACKED = b"sent, never acknowledged"


async def raw_peer(port: int) -> socket.socket:
    """A peer that says HELLO and then only what the test writes; it never reads."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, HELLO)
    return sock


async def read_to_eof(sock: socket.socket, limit: float) -> list[object]:
    """Every frame the server sent this peer, until its EOF (``limit`` s at most)."""
    loop = asyncio.get_running_loop()
    decoder = Decoder(1 << 20)
    frames: list[object] = []

    async def read() -> None:
        while data := await loop.sock_recv(sock, 65536):
            frames.extend(decoder.feed(data))

    await asyncio.wait_for(read(), limit)
    return frames


class Burst:
    """A server whose handlers note, when they wake, their verdict and the transport."""

    def __init__(self) -> None:
        self.woke: dict[int, tuple[Verdict, bool]] = {}  # peer port: verdict, closing then
        self.server: peerwatch.Server | None = None

    async def handler(self, conn: peerwatch.Connection) -> None:
        conn.enqueue_nowait(UNACKED)
        verdict = await conn.wait_closed()
        transport = conn.transport
        assert conn.peer is not None
        self.woke[conn.peer[1]] = (verdict, transport is not None and transport.is_closing())


@pytest.fixture
async def burst() -> AsyncIterator[Burst]:
    state = Burst()
    state.server = await peerwatch.serve(
        state.handler,
        "127.0.0.1",
        0,
        interval=INTERVAL,
        timeout=TIMEOUT,
        max_handshakes=SILENT + HEALTHY,
    )
    try:
        yield state
    finally:
        await state.server.shutdown(drain=2.0)


async def test_a_burst_of_silent_peers_is_told_first_and_still_closed(burst: Burst) -> None:
    server = burst.server
    assert server is not None
    loop = asyncio.get_running_loop()
    silent = [await raw_peer(server.port) for _ in range(SILENT)]
    healthy: list[peerwatch.Connection] = []
    try:
        for _ in range(HEALTHY):  # real clients: they ping on their own
            client = await peerwatch.connect(
                "127.0.0.1", server.port, interval=INTERVAL, timeout=TIMEOUT
            )
            healthy.append(client)
        for _ in range(100):
            if len(server.connections) == SILENT + HEALTHY:
                break
            await asyncio.sleep(0.05)
        assert len(server.connections) == SILENT + HEALTHY
        ping = encode_ping(1, 0)
        for sock in silent:  # the last word of each, at one instant
            sock.send(ping)
        sent_at = loop.time()
        frames = await asyncio.gather(*(read_to_eof(sock, 4 * TIMEOUT) for sock in silent))

        ports = {sock.getsockname()[1] for sock in silent}
        for _ in range(40):  # the last handlers may wake just after the last EOF
            if ports <= burst.woke.keys():
                break
            await asyncio.sleep(0.05)
        told = {port: burst.woke[port] for port in ports if port in burst.woke}
        assert len(told) == SILENT
        for verdict, _closing in told.values():
            if sys.platform.startswith("linux"):  # their kernels acknowledge: TCP_INFO says so
                assert verdict.cause is Cause.HUNG, verdict.describe()
                assert verdict.tcp_info is not None and verdict.tcp_info.retransmits == 0
            else:
                assert verdict.cause is Cause.SILENT, verdict.describe()
            assert verdict.undelivered == (UNACKED,)
            assert verdict.detected_at - sent_at >= TIMEOUT - 0.05
        closing_at_wake = [port for port, (_, closing) in told.items() if closing]
        assert closing_at_wake == []  # the handler heard of its verdict before the close
        for peer_frames in frames:  # and the close still came, after the GOODBYE
            goodbyes = [f for f in peer_frames if isinstance(f, Goodbye)]
            assert len(goodbyes) == 1 and "peer silent" in goodbyes[0].reason, peer_frames
        assert all(conn.verdict is None for conn in healthy)
        assert len(server.connections) == HEALTHY
    finally:
        for sock in silent:
            sock.close()
        for conn in healthy:
            await conn.close()
