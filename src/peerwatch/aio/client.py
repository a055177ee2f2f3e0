"""``peerwatch.connect``: open a connection and complete the HELLO handshake."""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
from typing import Any

from peerwatch.aio.connection import Connection
from peerwatch.aio.sockets import tune
from peerwatch.core.config import Config
from peerwatch.core.verdicts import Cause, Verdict, classify_os_error, errno_name
from peerwatch.errors import PeerDead

#: (host, port) -> the incarnation that server announced when we last connected.
_last_incarnation: dict[tuple[str, int], int] = {}


def make_config(config: Config | None, overrides: dict[str, Any]) -> Config:
    """``config`` with keyword overrides applied (e.g. ``interval=0.5``)."""
    base = config if config is not None else Config()
    return base.with_(**overrides) if overrides else base


async def connect(
    host: str,
    port: int,
    *,
    config: Config | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    local_addr: tuple[str, int] | None = None,
    **overrides: Any,
) -> Connection:
    """Connect to a peerwatch server and return the connection once both HELLOs are exchanged.

    Keyword overrides are ``Config`` fields (``interval``, ``timeout``, ``policy``...).
    A connection that cannot be made raises ``PeerDead`` whose verdict says why
    (RESET for refused, UNREACHABLE, TIMEOUT), chained from the OSError.
    ``conn.peer_restarted`` tells whether the server restarted since the last
    connection to the same address from this process.
    """
    cfg = make_config(config, overrides)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last_error: OSError | None = None
    sock: socket.socket | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            tune(sock, cfg)
            if local_addr is not None:
                sock.bind(local_addr)
            await asyncio.wait_for(loop.sock_connect(sock, addr), cfg.handshake_timeout)
            break
        except (OSError, asyncio.TimeoutError) as exc:
            sock.close()
            sock = None
            last_error = exc if isinstance(exc, OSError) else TimeoutError("connect timed out")
    if sock is None:
        raise _connect_failed(host, port, last_error, loop.time()) from last_error
    try:
        _, conn = await loop.create_connection(
            lambda: Connection(cfg, "client", loop),
            sock=sock,
            ssl=ssl,
            server_hostname=server_hostname if ssl is not None else None,
            ssl_handshake_timeout=cfg.handshake_timeout if ssl is not None else None,
        )
    except OSError as exc:
        sock.close()
        raise _connect_failed(host, port, exc, loop.time()) from exc
    try:
        await conn._ready
    except BaseException:
        if conn.transport is not None:
            conn.transport.abort()
        raise
    key = (host, port)
    previous = _last_incarnation.get(key)
    incarnation = conn.peer_incarnation
    assert incarnation is not None
    conn.peer_restarted = previous is not None and previous != incarnation
    _last_incarnation[key] = incarnation
    return conn


def _connect_failed(host: str, port: int, exc: OSError | None, now: float) -> PeerDead:
    cause = (classify_os_error(exc) if exc is not None else None) or Cause.UNREACHABLE
    verdict = Verdict(
        cause=cause,
        detail=f"could not connect to {host}:{port}: {exc}",
        detected_at=now,
        silent_for=0.0,
        errno=errno_name(exc),
    )
    return PeerDead(verdict)
