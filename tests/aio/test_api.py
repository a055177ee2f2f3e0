"""The public asyncio API: ``async with`` for connect and serve, typed settings."""

from __future__ import annotations

import dataclasses
import socket
import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api

import peerwatch
from peerwatch import Cause
from peerwatch.core.config import Config, Settings

pytestmark = pytest.mark.timeout(60)


async def echo(conn: peerwatch.Connection) -> None:
    async for message in conn:
        await conn.enqueue(message)


async def test_async_with_serve_and_connect_close_both_on_the_way_out() -> None:
    async with peerwatch.serve(echo, "127.0.0.1", 0, interval=0.5, timeout=2.0) as server:
        port = server.port
        async with peerwatch.connect("127.0.0.1", port, interval=0.5, timeout=2.0) as conn:
            await conn.send(b"hi")
            assert await conn.recv() == b"hi"
        assert conn.verdict is not None and conn.verdict.cause is Cause.LOCAL
        assert conn.verdict.detail == "closed by this side: context exited"
    with socket.socket() as probe:  # the server is gone: nobody listens any more
        assert probe.connect_ex(("127.0.0.1", port)) != 0


async def test_await_still_works_and_a_dead_connection_is_left_as_it_is() -> None:
    server = await peerwatch.serve(echo, "127.0.0.1", 0)
    try:
        conn = await peerwatch.connect("127.0.0.1", server.port)
        await conn.close("by hand")
        async with peerwatch.connect("127.0.0.1", server.port) as other:
            await other.close("already")
        assert other.verdict is not None and other.verdict.detail == "closed by this side: already"
    finally:
        await server.shutdown()


def test_settings_are_exactly_the_config_fields() -> None:
    assert set(Settings.__annotations__) == {field.name for field in dataclasses.fields(Config)}


@pytest.mark.slow
def test_mypy_catches_a_misspelt_setting_and_a_string_for_a_number(tmp_path: Path) -> None:
    source = tmp_path / "user.py"
    source.write_text(
        textwrap.dedent(
            """
            import peerwatch
            from peerwatch import sync

            async def handler(conn: peerwatch.Connection) -> None:
                await conn.send(b"fine")

            async def main() -> None:
                await peerwatch.connect("h", 1, intervall=0.5)
                await peerwatch.connect("h", 1, timeout="5")
                async with peerwatch.serve(handler, "h", 1, max_frame=4096.5):
                    await peerwatch.connect("h", 1, interval=0.5, timeout=2.0, policy="adaptive")
                sync.connect("h", 1, send_queue="many")
            """
        )
    )
    out, _, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(source)]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1
    # one line may get two errors: connect is overloaded (resume=True returns another type)
    assert list(dict.fromkeys(line.split(":")[1] for line in errors)) == ["9", "10", "11", "13"], (
        out
    )
    assert '"intervall"' in errors[0]
