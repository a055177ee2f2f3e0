"""What a server connection no longer allocates until it is asked for (issue 13, memory per
idle connection): the handshake's and the end's futures, the server's closures. Asked for
late, each still tells what happened before."""

from __future__ import annotations

import asyncio
import logging
import socket
from contextlib import closing

import pytest
from bench.mem_per_conn import measure
from bench.rawclients import peerwatch_hello
from waiting import eventually

import peerwatch
from peerwatch.core.verdicts import Cause

pytestmark = pytest.mark.timeout(60)


async def test_ready_made_after_the_handshake_has_succeeded() -> None:
    served: list[peerwatch.Connection] = []

    async def handler(conn: peerwatch.Connection) -> None:
        served.append(conn)
        await conn.wait_closed()

    async with peerwatch.serve(handler, interval=0.5, timeout=5.0) as server:
        client = await peerwatch.connect("127.0.0.1", server.port, interval=0.5, timeout=5.0)
        try:
            await eventually(lambda: served)
            conn = served[0]
            assert conn._waiters._ready is None and conn._waiters._closed is None  # not made
            assert conn.ready.done() and conn.ready.result() is None
            assert not conn.closed.done()
            assert server.connections == {conn} and not server.handshaking
        finally:
            await client.close()


async def test_ready_made_after_a_verdict_in_the_handshake_raises_it() -> None:
    accepted: list[peerwatch.Connection] = []

    async def handler(conn: peerwatch.Connection) -> None:
        raise AssertionError("no handler for a connection that never said HELLO")

    async with peerwatch.serve(
        handler, interval=0.2, timeout=1.0, handshake_timeout=0.3, on_accept=accepted.append
    ) as server:
        with closing(socket.create_connection(("127.0.0.1", server.port))):
            await eventually(lambda: accepted and accepted[0].verdict is not None)
            conn = accepted[0]
            await eventually(lambda: conn not in server.handshaking and not server._open)
            assert conn._waiters._ready is None
            with pytest.raises(peerwatch.HandshakeFailed):
                conn.ready.result()
            assert conn.closed.result() is conn.verdict  # made after the socket closed: done
            assert await conn.wait_closed() is conn.verdict
            assert not server.connections and not server._handlers


async def test_the_server_forgets_a_dead_peer_without_closures() -> None:
    """The connection's back-reference does what the three closures did: the peer's death
    leaves nothing of it in the server's sets, and its handler ends."""
    ended: list[Cause] = []

    async def handler(conn: peerwatch.Connection) -> None:
        ended.append((await conn.wait_closed()).cause)

    async with peerwatch.serve(handler, interval=0.2, timeout=1.0) as server:
        with closing(socket.create_connection(("127.0.0.1", server.port))) as peer:
            peer.sendall(peerwatch_hello(0.2, 1.0))
            await eventually(lambda: server.connections)
            assert server._open and server._handlers
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        await eventually(lambda: ended)
        assert ended == [Cause.RESET]
        await eventually(lambda: not server._handlers)
        assert not server.connections and not server._open and not server.handshaking


@pytest.mark.parametrize("kind", ["raises", "raises at once", "not awaitable"])
async def test_a_failing_handler_is_one_log_line_and_a_goodbye(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def raises(conn: peerwatch.Connection) -> None:
        raise ValueError("bug in the handler")

    def raises_at_once(conn: peerwatch.Connection) -> None:
        raise ValueError("bug in the plain handler")

    def not_awaitable(conn: peerwatch.Connection) -> int:
        return 42  # neither None (a callback handler) nor an awaitable

    handler = {"raises": raises, "raises at once": raises_at_once}.get(kind, not_awaitable)
    caplog.set_level(logging.ERROR, "peerwatch")
    async with peerwatch.serve(handler, interval=0.2, timeout=1.0) as server:  # type: ignore[arg-type]
        client = await peerwatch.connect("127.0.0.1", server.port, interval=0.2, timeout=1.0)
        verdict = await asyncio.wait_for(client.wait_closed(), 5.0)
        assert verdict.cause is Cause.GOODBYE
        await eventually(lambda: not server._handlers and not server.connections)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("handler failed for ('127.0.0.1', ")


@pytest.mark.slow
async def test_an_idle_server_connection_costs_under_five_and_a_half_kib() -> None:
    """tracemalloc at 1,000 idle connections (each handler awaiting ``wait_closed``): 6.1-6.3
    KB with the server's closures and eager futures, 4.8-4.9 KB without (measured)."""
    per_connection = min([await measure(1000), await measure(1000)])
    assert per_connection < 5.5 * 1024


async def test_the_handler_sees_a_silent_peers_verdict_before_the_socket_closes() -> None:
    """A burst of verdicts (issue 13): the handler is woken with the verdict as soon as it is
    decided, not a loop pass later behind every other connection's close."""
    seen: list[tuple[Cause, bool]] = []

    async def handler(conn: peerwatch.Connection) -> None:
        verdict = await conn.wait_closed()
        seen.append((verdict.cause, conn.closed.done()))
        assert await conn.wait_closed() is verdict  # asked again: at once, the same
        await conn.closed  # and the socket does close

    async with peerwatch.serve(handler, interval=0.2, timeout=0.6) as server:
        with closing(socket.create_connection(("127.0.0.1", server.port))) as peer:
            peer.sendall(peerwatch_hello(0.2, 0.6))  # then nothing: its kernel still ACKs
            await eventually(lambda: seen)
            await eventually(lambda: not server._handlers and not server._open)
    assert seen == [(Cause.HUNG, False)]


async def test_a_resumable_servers_closed_sockets_leave_its_count_of_open_ones() -> None:
    """A ResumableServer's links are made without the back-reference: their closes are
    still counted against the descriptor cap (``Server._open``), or the cap would fill."""

    async def handler(session: object) -> None:
        raise AssertionError("no session from a socket that never spoke")

    async with peerwatch.serve(handler, resume_window=5.0, interval=0.2, timeout=1.0) as server:
        for _ in range(3):
            with closing(socket.create_connection(("127.0.0.1", server.port))):
                await eventually(lambda: server._open)
            await eventually(lambda: not server._open)
