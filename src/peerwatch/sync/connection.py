"""Blocking connections: the asyncio Connection driven from the caller's thread."""

from __future__ import annotations

import ssl as ssl_module
from typing import TYPE_CHECKING, Literal, overload

from peerwatch.aio.client import open_connection
from peerwatch.aio.connection import Connection as AioConnection
from peerwatch.core.config import Config, Settings
from peerwatch.core.session import DEFAULT_LIMITS, SessionLimits
from peerwatch.sync.blocking import BlockingCalls
from peerwatch.sync.loop import check_timeout, shared_loop
from peerwatch.sync.resumable import ResumableConnection

if TYPE_CHECKING:
    from typing_extensions import Unpack


class Connection(BlockingCalls[AioConnection]):
    """A peerwatch connection with blocking calls, each bounded by ``timeout`` seconds.

    Heartbeats run on a background loop, so a caller that is busy for a while
    does not make the peer think we are dead. ``TimeoutError`` from a call
    means only that the call's own wait ran out: the connection is still
    alive (or ``verdict`` says otherwise), queued messages stay queued, and a
    message is never taken (and acknowledged) without being returned.
    ``for message in conn`` has no call deadline: it ends with the connection.
    """

    # --- state (safe to read from any thread: plain attribute reads)
    @property
    def rtt(self) -> float | None:
        return self.aio.rtt

    @property
    def peer(self) -> tuple[str, int] | None:
        return self.aio.peer

    @property
    def peer_restarted(self) -> bool:
        return self.aio.peer_restarted

    @property
    def stalls(self) -> int:
        return self.aio.stalls

    def __enter__(self) -> Connection:
        return self

    def __repr__(self) -> str:
        return f"<peerwatch.sync.Connection {self.aio!r}>"


@overload
def connect(
    host: str,
    port: int,
    *,
    config: Config | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    connect_timeout: float | None = None,
    resume: Literal[False] = False,
    **settings: Unpack[Settings],
) -> Connection: ...


@overload
def connect(
    host: str,
    port: int,
    *,
    config: Config | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    connect_timeout: float | None = None,
    resume: Literal[True],
    resume_timeout: float = 60.0,
    max_replay_bytes: int = DEFAULT_LIMITS.max_replay_bytes,
    max_replay_age: float = DEFAULT_LIMITS.max_replay_age,
    **settings: Unpack[Settings],
) -> ResumableConnection: ...


def connect(
    host: str,
    port: int,
    *,
    config: Config | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    connect_timeout: float | None = None,
    resume: bool = False,
    resume_timeout: float = 60.0,
    max_replay_bytes: int = DEFAULT_LIMITS.max_replay_bytes,
    max_replay_age: float = DEFAULT_LIMITS.max_replay_age,
    **settings: Unpack[Settings],
) -> Connection | ResumableConnection:
    """Connect and complete the handshake, waiting at most ``connect_timeout`` seconds.

    Keyword overrides are ``Config`` fields with the same meaning as for
    ``peerwatch.connect``: ``interval=0.5, timeout=2.0`` declares the peer dead
    after 2 s of silence. ``connect_timeout`` (default: twice the handshake
    timeout plus a second, for TCP, TLS and HELLO) bounds only this call.
    ``resume=True`` opens a resumable session (README, "Resumable sessions"),
    with the asyncio API's ``resume_timeout`` and replay limits.
    """
    runner = shared_loop()
    cfg = Config.from_overrides(config, settings)
    bound = connect_timeout if connect_timeout is not None else 2 * cfg.handshake_timeout + 1.0
    check_timeout(bound)
    if resume:
        from peerwatch.aio.resumable_client import connect_resumable

        limits = SessionLimits(max_replay_bytes, max_replay_age, resume_timeout)
        session = runner.run(
            connect_resumable(host, port, cfg, limits, ssl=ssl, server_hostname=server_hostname),
            bound,
        )
        return ResumableConnection(runner, session)
    conn = runner.run(
        open_connection(host, port, cfg, ssl=ssl, server_hostname=server_hostname), bound
    )
    return Connection(runner, conn)
