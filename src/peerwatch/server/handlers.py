"""Built-in connection handlers for demos and benchmarks, and resolving ``--handler`` specs.

``echo`` sends every message back (the round trip a load generator measures);
``sink`` takes every message and discards it (one-way throughput: each message
is still acknowledged, because ``recv()`` is what acknowledges). A user handler
is named ``module:function`` and must be ``async def handler(conn) -> None``.
"""

from __future__ import annotations

import importlib
import inspect

from peerwatch.aio.connection import Connection
from peerwatch.aio.server import Handler
from peerwatch.errors import ConfigError


async def echo(conn: Connection) -> None:
    """Send every message back on the same connection, pipelined (no wait per message).

    ``enqueue`` only waits while the send queue is full, so a slow reader on the
    far side slows this loop down (backpressure) instead of growing memory.
    """
    async for message in conn:
        await conn.enqueue(message)
    await conn.drain()


async def sink(conn: Connection) -> None:
    """Receive and discard every message until the peer goes away."""
    async for _ in conn:
        pass


BUILTIN: dict[str, Handler] = {"echo": echo, "sink": sink}


def resolve_handler(spec: str) -> Handler:
    """``echo``, ``sink`` or ``package.module:function`` -> the handler coroutine function.

    Raises ``ConfigError`` naming what is wrong, so ``serve`` fails at start-up
    rather than on the first connection.
    """
    builtin = BUILTIN.get(spec)
    if builtin is not None:
        return builtin
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"handler {spec!r}: expected 'echo', 'sink' or 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"handler {spec!r}: cannot import {module_name!r}: {exc}") from exc
    target: object = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ConfigError(f"handler {spec!r}: {module_name!r} has no {attr!r}") from exc
    if not inspect.iscoroutinefunction(target):
        raise ConfigError(
            f"handler {spec!r} must be an 'async def handler(conn)' function, got {target!r}"
        )
    handler: Handler = target
    return handler
