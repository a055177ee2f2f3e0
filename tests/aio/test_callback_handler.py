"""A plain-function handler (issue 13, memory per connection): the callback style, with no
task per connection. It sets ``set_message_callback`` and ``add_verdict_callback`` and returns;
the connection then runs until its verdict, its close or the server's shutdown. Real
loopback connections throughout."""

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

TIMING = {"interval": 0.5, "timeout": 5.0}


def echo(conn: peerwatch.Connection, message: bytes) -> None:
    conn.enqueue_nowait(message)


def echoing(conn: peerwatch.Connection) -> None:
    conn.set_message_callback(echo)


async def test_a_plain_function_handler_echoes_in_order_without_a_task_per_connection() -> None:
    async with peerwatch.serve(echoing, **TIMING) as server:
        tasks_before = len(asyncio.all_tasks())
        clients = [await peerwatch.connect("127.0.0.1", server.port, **TIMING) for _ in range(20)]
        try:
            await eventually(lambda: len(server.connections) == 20)
            # an ``async def`` handler would add 20 tasks; the clients run none either
            assert len(asyncio.all_tasks()) - tasks_before < 5
            for client in clients:
                for n in range(200):
                    client.enqueue_nowait(b"%d" % n)
            for client in clients:
                got = [await asyncio.wait_for(client.recv(), 5.0) for _ in range(200)]
                assert got == [b"%d" % n for n in range(200)]
        finally:
            for client in clients:
                await client.close()


async def test_messages_waiting_before_the_callback_is_set_come_first_in_order() -> None:
    served: list[peerwatch.Connection] = []

    def later(conn: peerwatch.Connection) -> None:
        served.append(conn)  # the callback is set only once five messages wait

    async with peerwatch.serve(later, **TIMING) as server:
        client = await peerwatch.connect("127.0.0.1", server.port, **TIMING)
        try:
            for n in range(5):
                client.enqueue_nowait(b"early %d" % n)
            # all five wait for the application (what a server holds for its peer)
            await eventually(lambda: served and served[0].held_bytes == 5 * len(b"early 0"))
            served[0].set_message_callback(echo)
            for n in range(5):
                client.enqueue_nowait(b"late %d" % n)
            got = [await asyncio.wait_for(client.recv(), 5.0) for _ in range(10)]
            assert got == [b"early %d" % n for n in range(5)] + [b"late %d" % n for n in range(5)]
        finally:
            await client.close()


async def test_a_flood_is_acknowledged_as_the_callback_takes_it() -> None:
    """Five send windows' worth: the sender can finish only if what the callback took opens
    the receive window again and is ACKed."""
    taken: list[int] = []

    def count(conn: peerwatch.Connection, message: bytes) -> None:
        taken.append(len(message))

    def handler(conn: peerwatch.Connection) -> None:
        conn.set_message_callback(count)

    async with peerwatch.serve(handler, **TIMING) as server:
        client = await peerwatch.connect("127.0.0.1", server.port, **TIMING)
        try:
            for _ in range(5 * client.config.send_queue):
                await client.enqueue(b"x" * 100)
            await asyncio.wait_for(client.drain(), 20.0)
            assert len(taken) == 5 * client.config.send_queue and set(taken) == {100}
        finally:
            await client.close()


async def test_a_raising_message_callback_ends_only_its_own_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fragile(conn: peerwatch.Connection, message: bytes) -> None:
        if message == b"boom":
            raise ValueError("bug in the callback")
        conn.enqueue_nowait(message)

    def handler(conn: peerwatch.Connection) -> None:
        conn.set_message_callback(fragile)

    caplog.set_level(logging.ERROR, "peerwatch")
    async with peerwatch.serve(handler, **TIMING) as server:
        victim = await peerwatch.connect("127.0.0.1", server.port, **TIMING)
        bystander = await peerwatch.connect("127.0.0.1", server.port, **TIMING)
        try:
            victim.enqueue_nowait(b"boom")
            verdict = await asyncio.wait_for(victim.wait_closed(), 5.0)
            assert verdict.cause is Cause.GOODBYE and verdict.goodbye_reason == "handler finished"
            await bystander.send(b"still here")
            assert await asyncio.wait_for(bystander.recv(), 5.0) == b"still here"
            assert bystander.verdict is None
        finally:
            await bystander.close()
    failures = [r.getMessage() for r in caplog.records if "callback failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].startswith("message callback failed for")


async def test_the_verdict_callback_is_told_the_connection_and_its_verdict() -> None:
    ended: list[tuple[peerwatch.Connection, Cause]] = []
    served: list[peerwatch.Connection] = []

    def on_verdict(conn: peerwatch.Connection, verdict: peerwatch.Verdict) -> None:
        ended.append((conn, verdict.cause))

    def handler(conn: peerwatch.Connection) -> None:
        served.append(conn)
        conn.add_verdict_callback(on_verdict)

    async with peerwatch.serve(handler, **TIMING) as server:
        client = await peerwatch.connect("127.0.0.1", server.port, **TIMING)
        await eventually(lambda: served)
        await client.close("done")  # GOODBYE
        await eventually(lambda: ended)
        assert ended == [(served[0], Cause.GOODBYE)]
        with closing(socket.create_connection(("127.0.0.1", server.port))) as raw:
            raw.sendall(peerwatch_hello(0.5, 5.0))
            await eventually(lambda: len(served) == 2)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        await eventually(lambda: len(ended) == 2)
        assert ended[1] == (served[1], Cause.RESET)
        await eventually(lambda: not server.connections)


async def test_shutdown_says_goodbye_to_every_callback_connection() -> None:
    server = await peerwatch.serve(echoing, **TIMING)
    clients = [await peerwatch.connect("127.0.0.1", server.port, **TIMING) for _ in range(3)]
    await eventually(lambda: len(server.connections) == 3)
    await server.shutdown("maintenance")
    for client in clients:
        verdict = await asyncio.wait_for(client.wait_closed(), 5.0)
        assert verdict.cause is Cause.GOODBYE and verdict.goodbye_reason == "maintenance"


async def test_none_gives_the_messages_back_to_recv() -> None:
    seen: list[bytes] = []
    back: list[bytes] = []

    def keep(conn: peerwatch.Connection, message: bytes) -> None:
        seen.append(message)
        if message == b"2":
            conn.set_message_callback(None)

    async def handler(conn: peerwatch.Connection) -> None:
        conn.set_message_callback(keep)
        back.extend([await conn.recv(), await conn.recv()])
        await conn.wait_closed()

    async with peerwatch.serve(handler, **TIMING) as server:
        client = await peerwatch.connect("127.0.0.1", server.port, **TIMING)
        try:
            for message in (b"1", b"2", b"3", b"4"):
                client.enqueue_nowait(message)
            await eventually(lambda: len(back) == 2)
            assert seen == [b"1", b"2"] and back == [b"3", b"4"]
        finally:
            await client.close()


@pytest.mark.slow
async def test_an_idle_callback_connection_costs_a_kib_less_than_one_with_a_task() -> None:
    """tracemalloc at 1,000 idle connections: about 1.3 KB less (measured), the handler's
    task and coroutines, the end's future and a partial per verdict callback."""
    with_task = min([await measure(1000), await measure(1000)])
    with_callbacks = min([await measure(1000, callbacks=True), await measure(1000, callbacks=True)])
    assert with_task - with_callbacks > 1000


async def test_a_plain_function_on_a_resumable_server_is_one_log_line_and_a_goodbye(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(session: object) -> None:
        return None

    caplog.set_level(logging.ERROR, "peerwatch")
    async with peerwatch.serve(handler, resume_window=5.0, **TIMING) as server:  # type: ignore[arg-type]
        conn = await peerwatch.connect("127.0.0.1", server.port, resume=True, **TIMING)
        verdict = await asyncio.wait_for(conn.wait_closed(), 5.0)
        assert verdict.cause is Cause.GOODBYE and verdict.goodbye_reason == "handler finished"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "a resumable server runs an async def handler" in messages[0]
    assert not any(r.exc_info for r in caplog.records)
