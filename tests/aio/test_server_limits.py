"""What one peer may take from a server: slots, handshakes, memory; and where a server listens."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

import peerwatch
from peerwatch import Cause, sync
from peerwatch.core.config import HANDSHAKE_GRACE
from peerwatch.core.decoder import Decoder
from peerwatch.core.frames import (
    PROTOCOL_VERSION,
    Goodbye,
    GoodbyeCode,
    Hello,
    encode_data,
    encode_hello,
    encode_ping,
)

pytestmark = pytest.mark.timeout(60)

HELLO = encode_hello(Hello(PROTOCOL_VERSION, 42, 0.5, 30.0, 1 << 20, 1 << 20))


async def echo(conn: peerwatch.Connection) -> None:
    async for message in conn:
        await conn.enqueue(message)


@contextlib.contextmanager
def silent_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connected sockets that never say a word (slowloris), closed afterwards."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection(("127.0.0.1", port)))
        yield socks
    finally:
        for sock in socks:
            sock.close()


async def echoes(conn: peerwatch.Connection, word: bytes, within: float = 3.0) -> bool:
    await conn.send(word)
    return await asyncio.wait_for(conn.recv(), within) == word


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server ended this socket (EOF or RST), without waiting."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


# ------------------------------------------------------------------ item 9: slowloris


async def test_silent_sockets_do_not_take_the_slots_of_real_peers() -> None:
    # the handshake timeout is long on purpose: real peers must not wait for it
    srv = await peerwatch.serve(echo, max_connections=100, handshake_timeout=30.0)
    try:
        with silent_sockets(srv.port, 150):
            started = time.monotonic()
            conn = await peerwatch.connect("127.0.0.1", srv.port, handshake_timeout=5.0)
            assert await echoes(conn, b"let in")
            assert time.monotonic() - started < 3.0
            assert conn.verdict is None and srv.refused == 0
            await conn.close()
    finally:
        await srv.shutdown()


async def test_handshake_allowance_drops_the_oldest_silent_sockets() -> None:
    srv = await peerwatch.serve(echo, max_handshakes=20, handshake_timeout=30.0)
    try:
        with silent_sockets(srv.port, 60) as silent:
            await asyncio.sleep(HANDSHAKE_GRACE + 0.3)  # all of them past the grace
            conn = await peerwatch.connect("127.0.0.1", srv.port)
            assert await echoes(conn, b"in")
            await asyncio.sleep(0.2)
            assert len(srv.handshaking) <= 20
            assert srv.dropped_handshakes >= 40
            dropped = [closed_by_server(sock) for sock in silent]
            # oldest first: the first 40 were dropped, the newest 19 still wait for their HELLO
            assert all(dropped[:40]) and not any(dropped[-19:])
            await conn.close()
    finally:
        await srv.shutdown()


async def test_a_burst_of_real_peers_is_not_cut_by_the_allowance() -> None:
    srv = await peerwatch.serve(echo, max_handshakes=4)
    try:
        conns = await asyncio.gather(*(peerwatch.connect("127.0.0.1", srv.port) for _ in range(40)))
        assert all([await echoes(conn, b"%d" % i) for i, conn in enumerate(conns)])
        assert srv.dropped_handshakes == 0
        await asyncio.gather(*(conn.close() for conn in conns))
    finally:
        await srv.shutdown()


# ------------------------------------------------------------- item 8: byte budgets


async def test_send_buffer_bytes_apply_backpressure() -> None:
    release = asyncio.Event()

    async def late_reader(conn: peerwatch.Connection) -> None:
        await release.wait()
        async for _ in conn:
            pass

    srv = await peerwatch.serve(late_reader)
    conn = await peerwatch.connect("127.0.0.1", srv.port, send_buffer=10_000)
    try:
        await conn.enqueue(b"x" * 6_000)
        await conn.enqueue(b"y" * 4_000)  # exactly the budget
        blocked = asyncio.ensure_future(conn.enqueue(b"z"))
        await asyncio.sleep(0.3)
        assert not blocked.done() and conn.in_flight == 2
        release.set()
        await asyncio.wait_for(await asyncio.wait_for(blocked, 5), 5)
        # one message larger than the whole budget still goes, alone
        await asyncio.wait_for(conn.send(b"w" * 50_000), 5)
    finally:
        await conn.close()
        await srv.shutdown()


async def test_memory_budget_ends_the_largest_holder_and_spares_the_rest() -> None:
    # every connection is within its own bounds (1 MiB each way); together they are not
    srv = await peerwatch.serve(
        echo,
        memory_budget=1_500_000,
        send_buffer=1 << 20,
        recv_buffer=1 << 20,
        max_message=1 << 20,
    )
    canary = await peerwatch.connect("127.0.0.1", srv.port)
    hogs: list[peerwatch.Connection] = []
    srv.on_connection = hogs.append
    try:
        assert await echoes(canary, b"before")
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(HELLO)
        goodbye: Goodbye | None = None
        decoder = Decoder(1 << 22)
        for seq in range(1, 101):  # 100 x 64 KiB, never reading
            writer.write(encode_data(seq, bytes(65536)))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(writer.drain(), 0.5)
            if hogs and hogs[0].verdict is not None:
                break
            assert await echoes(canary, b"during %d" % seq)
        assert hogs and hogs[0].verdict is not None, "the hog was never stopped"
        verdict = hogs[0].verdict
        assert verdict.cause is Cause.LOCAL and "memory budget" in verdict.detail
        assert srv.over_budget == 1 and srv.budget.used < srv.budget.limit
        # the hog, reading at last, finds the reason in its GOODBYE
        while goodbye is None:
            data = await asyncio.wait_for(reader.read(1 << 20), 5)
            assert data, "EOF without GOODBYE"
            goodbye = next((f for f in decoder.feed(data) if isinstance(f, Goodbye)), None)
        assert goodbye.code is GoodbyeCode.OVERLOADED and "memory budget" in goodbye.reason
        writer.close()
        assert await echoes(canary, b"after")
        assert canary.verdict is None
    finally:
        await canary.close()
        await srv.shutdown()
    assert srv.budget.used == 0  # every connection refunded what it held at its verdict


#: PINGs a flooding peer sends at most: 34 MB, far more than the kernels' buffers hold.
FLOOD_PINGS = 2_000_000


def flood_pings(port: int, stop: list[peerwatch.Connection]) -> int:
    """Send HELLO, then PINGs as fast as the socket takes them, never reading, until the
    server's connection has a verdict (at most FLOOD_PINGS, then 10 s). Returns the PINGs sent."""
    batch = b"".join(encode_ping(i, 0) for i in range(1000))
    sent = 0
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.connect(("127.0.0.1", port))
        sock.settimeout(2.0)
        sock.sendall(HELLO)
        with contextlib.suppress(OSError):
            while sent < FLOOD_PINGS and not (stop and stop[0].verdict is not None):
                sock.sendall(batch)
                sent += 1000
        deadline = time.monotonic() + 10  # the server may still be reading what was sent
        while not (stop and stop[0].verdict is not None) and time.monotonic() < deadline:
            time.sleep(0.05)
    return sent


async def test_a_peer_that_talks_but_never_reads_is_hung_up_on() -> None:
    # pings allowed at any rate, so the test takes seconds: the PONGs pile up all the same.
    # No kernel knobs: on Linux >= 5.10, TCP_USER_TIMEOUT would end a window closed for
    # timeout + interval (a TIMEOUT verdict); the byte bound must hold without it too.
    flooder: list[peerwatch.Connection] = []
    srv = await peerwatch.serve(echo, max_pings_per_interval=10_000_000, kernel_knobs=False)
    canary = await peerwatch.connect("127.0.0.1", srv.port)
    srv.on_connection = flooder.append
    try:
        sent = await asyncio.to_thread(flood_pings, srv.port, flooder)
        assert flooder, "the flooding peer never got past its HELLO"
        verdict = await asyncio.wait_for(flooder[0].wait_closed(), 5)
        assert verdict.cause is Cause.HUNG and "reads nothing" in verdict.detail, (sent, verdict)
        assert sent < FLOOD_PINGS, "the server answered every PING into a buffer never read"
        assert await echoes(canary, b"unharmed")
    finally:
        await canary.close()
        await srv.shutdown()


# ------------------------------------------------------------- item 14: where it listens


async def test_serve_listens_on_loopback_unless_told_otherwise() -> None:
    srv = await peerwatch.serve(echo)
    try:
        assert srv.sockets[0].getsockname()[0] == "127.0.0.1"
    finally:
        await srv.shutdown()
    srv = await peerwatch.serve(echo, "0.0.0.0")
    try:
        assert srv.sockets[0].getsockname()[0] == "0.0.0.0"
    finally:
        await srv.shutdown()


def test_sync_serve_listens_on_loopback_unless_told_otherwise() -> None:
    with sync.serve(lambda conn: None) as srv:
        assert srv.sockets[0].getsockname()[0] == "127.0.0.1"
