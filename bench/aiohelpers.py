"""Event-loop plumbing shared by the benchmark children (stdlib asyncio or uvloop)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    """Run ``main`` on a fresh loop: uvloop's when asked, the stdlib's otherwise."""
    if use_uvloop:
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


async def stdin_lines() -> AsyncIterator[str]:
    """Commands from the parent, one per line, until it closes our stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        yield line.decode().strip()


def loop_name() -> str:
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
