"""A server that falls behind in a reconnect storm must not blame its peers for it.

The handshake allowance drops the oldest sockets that have not said HELLO, to
keep silent sockets from locking real peers out. But when the server process
itself is late (every client reconnecting at once after a restart), a real
peer's HELLO may already sit in the server's own receive queue, unread: that
peer is not silent, the server is behind, and dropping it turns a storm into a
second storm.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import peerwatch
from peerwatch.core.config import HANDSHAKE_GRACE
from peerwatch.core.frames import PROTOCOL_VERSION, Hello, encode_hello


async def hold(conn: peerwatch.Connection) -> None:
    await conn.wait_closed()


def hello() -> bytes:
    return encode_hello(
        Hello(PROTOCOL_VERSION, int.from_bytes(os.urandom(8), "big"), 1.0, 5.0, 2**20, 2**20)
    )


def saying_hello(port: int) -> socket.socket:
    """A real peer's first move: connect and send HELLO at once (the kernel queues it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(hello())
    return sock


@contextlib.contextmanager
def closing(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


async def test_peers_whose_hello_waits_unread_are_not_dropped_as_silent() -> None:
    loop = asyncio.get_running_loop()
    stalled = False

    def on_accept(conn: peerwatch.Connection) -> None:
        nonlocal stalled
        if not stalled:  # the first accepted socket makes this process fall behind
            stalled = True
            loop.call_soon(time.sleep, HANDSHAKE_GRACE + 0.4)

    srv = await peerwatch.serve(hold, max_handshakes=2, handshake_timeout=30.0, on_accept=on_accept)
    late: list[socket.socket] = []
    # one more peer arrives while the server is stalled: accepting it, the server
    # looks for handshakes to drop, and finds the first six old and HELLO-less
    arrival = threading.Timer(0.5, lambda: late.append(saying_hello(srv.port)))
    try:
        with closing([saying_hello(srv.port) for _ in range(6)]) as early:
            arrival.start()
            for _ in range(100):  # bounded: 5 s
                if len(srv.connections) == 7:
                    break
                await asyncio.sleep(0.05)
            assert srv.dropped_handshakes == 0
            assert len(srv.connections) == 7
            assert len(early) + len(late) == 7
    finally:
        arrival.join(5)
        for sock in late:
            sock.close()
        await srv.shutdown()


async def test_a_server_behind_lets_the_storm_wait_in_the_backlog() -> None:
    """Peers that already said HELLO fill the allowance: accept no more until they are read.

    Accepting the whole backlog at once would start every peer's clock while it waits
    behind the others to be read; paused, the rest wait in the kernel's backlog.
    """
    allowance = 4
    seen: list[int] = []  # handshakes held at each accept, this one included
    srv: peerwatch.Server | None = None

    def on_accept(conn: peerwatch.Connection) -> None:
        assert srv is not None
        seen.append(len(srv.handshaking) + 1)

    srv = await peerwatch.serve(hold, max_handshakes=allowance, on_accept=on_accept)
    storm = 40
    try:
        with closing([saying_hello(srv.port) for _ in range(storm)]):
            for _ in range(100):  # bounded: 5 s
                if len(srv.connections) == storm:
                    break
                await asyncio.sleep(0.05)
            assert len(srv.connections) == storm  # every peer got in
            assert srv.dropped_handshakes == 0
            assert len(seen) == storm
            # the whole storm waits in the backlog, its HELLOs queued, before this
            # process first runs: without the pause it would take them all at once
            assert max(seen) <= allowance
    finally:
        await srv.shutdown()


async def test_accepting_plain_tcp_starts_no_task_per_connection() -> None:
    """The transport of an accepted socket is made at once: the only task a connection
    gets is its handler's, after HELLO (``connect_accepted_socket`` cost one more each)."""
    loop = asyncio.get_running_loop()
    created: list[str] = []
    default = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        created.append(getattr(coro, "__qualname__", "?"))
        if default is not None:
            return default(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    srv = await peerwatch.serve(hold, handshake_timeout=30.0)
    loop.set_task_factory(counting)
    try:
        with closing([socket.create_connection(("127.0.0.1", srv.port)) for _ in range(5)]) as s:
            for _ in range(100):  # bounded: 5 s
                if len(srv.handshaking) == 5 and all(c.transport for c in srv.handshaking):
                    break
                await asyncio.sleep(0.05)
            assert [c.peer for c in srv.handshaking] == [x.getsockname() for x in s]
            assert created == []
            s[0].sendall(hello())  # one says HELLO: its handler is its one task
            for _ in range(100):
                if srv.connections:
                    break
                await asyncio.sleep(0.05)
            assert created == ["hold"]  # the handler itself, no wrapper
    finally:
        loop.set_task_factory(default)
        await srv.shutdown()


async def test_peers_that_lag_like_the_others_are_not_dropped_as_silent() -> None:
    """In a storm whole client hosts lag: if the real peers of this server take 1.4 s to
    say HELLO, a peer silent for 1.4 s is one of them, not a slowloris (the grace
    follows the HELLOs that really came)."""
    srv = await peerwatch.serve(hold, max_handshakes=4)
    storm = 24
    spacing = 0.1  # a lagging client host: peer i says HELLO i x 0.1 s after connecting
    late: list[socket.socket] = []

    def say_hello_slowly(socks: list[socket.socket]) -> None:
        started = time.monotonic()
        for index, sock in enumerate(socks):
            time.sleep(max(0.0, started + index * spacing - time.monotonic()))
            sock.sendall(hello())

    try:
        socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(storm)]
        with closing(socks):
            speaker = threading.Thread(target=say_hello_slowly, args=(socks,))
            speaker.start()
            # one more peer while the last 9 have not spoken yet: accepting it, the
            # server looks for handshakes to drop (those waiting past the grace)
            arrival = threading.Timer(1.45, lambda: late.append(saying_hello(srv.port)))
            arrival.start()
            try:
                for _ in range(120):  # bounded: 6 s
                    if len(srv.connections) == storm + 1:
                        break
                    await asyncio.sleep(0.05)
            finally:
                speaker.join(10)
                arrival.join(5)
            assert srv.dropped_handshakes == 0
            assert len(srv.connections) == storm + 1
            assert srv.grace > 2 * (storm - 10) * spacing  # learned from the slow HELLOs
    finally:
        for sock in late:
            sock.close()
        await srv.shutdown()
