"""Waiting in async tests for something another task or process makes true, bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(condition: Callable[[], object], seconds: float = 10.0) -> None:
    """Return once ``condition()`` is true; AssertionError after ``seconds`` (loop time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, f"condition not met within {seconds} s"
        await asyncio.sleep(0.01)
