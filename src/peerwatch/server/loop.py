"""Choosing the event loop of a worker: asyncio's own, or uvloop when asked and installed.

uvloop is optional (``pip install 'peerwatch[uvloop]'``). Asking for it when it
is missing is a configuration error, not a silent fallback: an operator who
asked for uvloop and benchmarks without it would draw the wrong conclusions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from peerwatch.errors import ConfigError

T = TypeVar("T")


def loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory for the loop to run on; raises ``ConfigError`` if uvloop is asked but missing."""
    if not use_uvloop:
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        raise ConfigError(
            "uvloop was asked for but is not installed: pip install 'peerwatch[uvloop]'"
        ) from exc
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool = False) -> T:
    """``asyncio.run(main)`` on the chosen loop (Python 3.10 has no ``loop_factory`` argument)."""
    try:
        factory = loop_factory(use_uvloop)
    except BaseException:
        main.close()
        raise
    loop = factory()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(_with_cleanup(main))
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


async def _with_cleanup(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main``, then cancel and await whatever tasks it left behind (as asyncio.run does)."""
    try:
        return await main
    finally:
        current = asyncio.current_task()
        leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.gather(*leftover, return_exceptions=True)


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """``uvloop`` or ``asyncio``: what a worker reports it runs on."""
    current = loop if loop is not None else asyncio.get_running_loop()
    return "uvloop" if type(current).__module__.startswith("uvloop") else "asyncio"
