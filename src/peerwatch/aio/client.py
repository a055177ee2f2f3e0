"""``peerwatch.connect``: open a connection and complete the HELLO handshake."""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
import time
from typing import TYPE_CHECKING, Literal, overload

from peerwatch.aio.connection import Connection
from peerwatch.aio.handles import Opening
from peerwatch.aio.sockets import tune
from peerwatch.core.config import Config, Settings
from peerwatch.core.session import DEFAULT_LIMITS, SessionLimits
from peerwatch.core.verdicts import (
    Verdict,
    connect_failure,
    errno_name,
    hung_or_silent,
)
from peerwatch.errors import HandshakeFailed, PeerDead
from peerwatch.kernel.tcpinfo import tcp_info

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from peerwatch.aio.resumable import ResumableConnection

#: (host, port) -> the incarnation that server announced when we last connected.
_last_incarnation: dict[tuple[str, int], int] = {}


#: The one way keyword settings become a Config (kept under this name for server/workers.py).
make_config = Config.from_overrides


@overload
def connect(
    host: str,
    port: int,
    *,
    config: Config | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    local_addr: tuple[str, int] | None = None,
    resume: Literal[False] = False,
    **settings: Unpack[Settings],
) -> Opening[Connection]: ...


@overload
def connect(
    host: str,
    port: int,
    *,
    config: Config | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    local_addr: tuple[str, int] | None = None,
    resume: Literal[True],
    resume_timeout: float = 60.0,
    max_replay_bytes: int = DEFAULT_LIMITS.max_replay_bytes,
    max_replay_age: float = DEFAULT_LIMITS.max_replay_age,
    **settings: Unpack[Settings],
) -> Opening[ResumableConnection]: ...


def connect(
    host: str,
    port: int,
    *,
    config: Config | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    local_addr: tuple[str, int] | None = None,
    resume: bool = False,
    resume_timeout: float = 60.0,
    max_replay_bytes: int = DEFAULT_LIMITS.max_replay_bytes,
    max_replay_age: float = DEFAULT_LIMITS.max_replay_age,
    **settings: Unpack[Settings],
) -> Opening[Connection] | Opening[ResumableConnection]:
    """Connect to a peerwatch server: ``conn = await connect(...)``, or
    ``async with connect(...) as conn:`` to have it closed with GOODBYE on the way out.

    Keyword settings are ``Config`` fields (``interval``, ``timeout``, ``policy``...),
    typed (``Settings``); they are checked at once, before any connection is tried.
    See ``open_connection`` for the rest. ``resume=True`` opens a resumable session
    (README, "Resumable sessions"): it reconnects for at most ``resume_timeout`` s.
    """
    cfg = Config.from_overrides(config, settings)
    if resume:
        from peerwatch.aio.resumable_client import connect_resumable

        limits = SessionLimits(max_replay_bytes, max_replay_age, resume_timeout)
        resuming = connect_resumable(
            host, port, cfg, limits, ssl=ssl, server_hostname=server_hostname, local_addr=local_addr
        )
        return Opening(resuming, _close_resumable)
    opening = open_connection(
        host, port, cfg, ssl=ssl, server_hostname=server_hostname, local_addr=local_addr
    )
    return Opening(opening, _close)


async def _close_resumable(conn: ResumableConnection) -> None:
    if conn.verdict is None:
        await conn.close("context exited")


async def _close(conn: Connection) -> None:
    if conn.verdict is None:
        await conn.close("context exited")


async def open_connection(
    host: str,
    port: int,
    cfg: Config,
    *,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    local_addr: tuple[str, int] | None = None,
) -> Connection:
    """Connect to a peerwatch server and return the connection once both HELLOs are exchanged.

    A connection that cannot be made raises ``PeerDead`` whose verdict says why,
    chained from the original exception: UNREACHABLE for a name that does not
    resolve or no route, RESET for refused, TIMEOUT, PROTOCOL for a TLS failure
    (rejected certificate, failed handshake), HUNG or SILENT for a peer that never
    finishes the TLS or HELLO handshake. With ``ssl``, the certificate is checked
    against ``server_hostname``, which defaults to ``host`` (as in asyncio).
    ``conn.peer_restarted`` tells whether the server restarted since the last
    connection to the same address from this process.
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # socket.gaierror; UnicodeError: not a host name
        raise _connect_failed(host, port, exc, loop.time()) from exc
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
    conn = await _start_protocol(host, port, sock, cfg, ssl=ssl, server_hostname=server_hostname)
    try:
        await conn.ready
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


async def _start_protocol(
    host: str,
    port: int,
    sock: socket.socket,
    cfg: Config,
    *,
    ssl: ssl_module.SSLContext | None,
    server_hostname: str | None,
) -> Connection:
    """Wrap the connected socket (TLS handshake first, if asked); HELLO goes out at once."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    making = asyncio.ensure_future(
        loop.create_connection(
            lambda: Connection(cfg, "client", loop),
            sock=sock,
            ssl=ssl,
            server_hostname=(server_hostname or host) if ssl is not None else None,
            # asyncio's own bound, a backstop: ours below reads TCP_INFO before the abort
            ssl_handshake_timeout=2 * cfg.handshake_timeout if ssl is not None else None,
        )
    )
    try:
        done, _ = await asyncio.wait({making}, timeout=cfg.handshake_timeout)
    except BaseException:  # our caller gave up: do not leave the attempt running
        making.cancel()
        raise
    if not done:
        waited = loop.time() - started
        info = tcp_info(sock)  # before the cancellation closes the socket
        making.cancel()
        await asyncio.wait({making})
        sock.close()
        verdict = Verdict(
            cause=hung_or_silent(info, waited),
            detail=f"could not connect to {host}:{port}: no TLS handshake from the peer"
            f" within the handshake timeout ({cfg.handshake_timeout} s)",
            detected_at=loop.time(),
            silent_for=waited,
            tcp_info=info,
            detected_wall=time.time(),
        )
        raise HandshakeFailed(verdict)
    error = making.exception()
    if isinstance(error, OSError):  # ssl.SSLError included
        sock.close()
        raise _connect_failed(host, port, error, loop.time(), during_tls=ssl is not None) from error
    return making.result()[1]  # or raises a usage error (a bad ssl argument) as it is


def _connect_failed(
    host: str, port: int, exc: BaseException | None, now: float, *, during_tls: bool = False
) -> PeerDead:
    """The verdict on a connection that was never made; every cause comes from core.verdicts."""
    cause, why = connect_failure(exc, during_tls=during_tls)
    verdict = Verdict(
        cause=cause,
        detail=f"could not connect to {host}:{port}: {why}",
        detected_at=now,
        silent_for=0.0,
        errno=errno_name(exc),
        detected_wall=time.time(),
    )
    return PeerDead(verdict)
