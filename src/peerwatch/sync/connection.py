"""Blocking connections: the asyncio Connection driven from the caller's thread."""

from __future__ import annotations

import ssl as ssl_module
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from peerwatch.aio.client import open_connection
from peerwatch.aio.connection import Connection as AioConnection
from peerwatch.aio.handles import Delivery as AioDelivery
from peerwatch.core.config import Config, Settings
from peerwatch.core.verdicts import QUIET_END, Verdict
from peerwatch.errors import ConnectionClosed, PeerDead
from peerwatch.sync.loop import DEFAULT_TIMEOUT, LoopThread, check_timeout, shared_loop

if TYPE_CHECKING:
    from typing_extensions import Unpack


class Delivery:
    """Handle for one enqueued message; ``wait(timeout)`` returns once the peer has it."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: LoopThread, inner: AioDelivery) -> None:
        self._runner = runner
        self._inner = inner

    @property
    def seq(self) -> int:
        return self._inner.seq

    @property
    def acknowledged(self) -> bool:
        return self._inner.acknowledged

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._runner.run(_delivered(self._inner), timeout)


async def _delivered(delivery: AioDelivery) -> None:
    await delivery


class Connection:
    """A peerwatch connection with blocking calls, each bounded by ``timeout`` seconds.

    Heartbeats run on a background loop, so a caller that is busy for a while
    does not make the peer think we are dead. ``TimeoutError`` from a call
    means only that the call's own wait ran out: the connection is still
    alive (or ``verdict`` says otherwise), queued messages stay queued, and a
    message is never taken (and acknowledged) without being returned.
    ``for message in conn`` has no call deadline: it ends with the connection.
    """

    def __init__(self, runner: LoopThread, conn: AioConnection) -> None:
        self._runner = runner
        self.aio = conn  # the underlying asyncio connection (read-only use from other threads)

    # --- state (safe to read from any thread: plain attribute reads)
    @property
    def verdict(self) -> Verdict | None:
        return self.aio.verdict

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
    def config(self) -> Config:
        return self.aio.config

    @property
    def stalls(self) -> int:
        return self.aio.stalls

    @property
    def in_flight(self) -> int:
        return self.aio.in_flight

    # --- blocking calls
    def send(self, payload: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Send and return once the peer application received it (or raise)."""
        self._runner.run(self.aio.send(payload), timeout)

    def enqueue(self, payload: bytes, timeout: float = DEFAULT_TIMEOUT) -> Delivery:
        """Queue a message; blocks only while the send queue is full."""
        return Delivery(self._runner, self._runner.run(self.aio.enqueue(payload), timeout))

    def drain(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until everything enqueued so far is acknowledged."""
        self._runner.run(self.aio.drain(), timeout)

    def recv(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Next message; ``TimeoutError`` when none came within ``timeout`` (peer still alive)."""
        return self._runner.run(self.aio.recv(), timeout)

    def close(self, reason: str = "", timeout: float = DEFAULT_TIMEOUT) -> Verdict:
        """Say GOODBYE, close, and return the verdict."""
        return self._runner.run(self.aio.close(reason), timeout)

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> Verdict:
        """Wait for the verdict, whatever ends the connection."""
        return self._runner.run(self.aio.wait_closed(), timeout)

    def messages(self, timeout: float | None = None) -> Iterator[bytes]:
        """Yield messages until the connection ends (quietly for GOODBYE, EOF, LOCAL).

        By default each wait lasts until the next message or the verdict: the
        heartbeats, not a call deadline, decide that a quiet peer is dead, so a
        live idle peer is never dropped. With ``timeout``, a wait longer than
        that raises ``TimeoutError`` (the connection stays open).
        """
        if timeout is not None:
            check_timeout(timeout)
        while True:
            try:
                yield self._runner.run(self.aio.recv(), timeout)
            except (PeerDead, ConnectionClosed) as exc:
                if exc.verdict.cause in QUIET_END:
                    return
                raise

    def __iter__(self) -> Iterator[bytes]:
        return self.messages()

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.verdict is None:
            self.close("context exited", timeout=self.config.close_timeout + 5.0)

    def __repr__(self) -> str:
        return f"<peerwatch.sync.Connection {self.aio!r}>"


def connect(
    host: str,
    port: int,
    *,
    config: Config | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    connect_timeout: float | None = None,
    **settings: Unpack[Settings],
) -> Connection:
    """Connect and complete the handshake, waiting at most ``connect_timeout`` seconds.

    Keyword overrides are ``Config`` fields with the same meaning as for
    ``peerwatch.connect``: ``interval=0.5, timeout=2.0`` declares the peer dead
    after 2 s of silence. ``connect_timeout`` (default: twice the handshake
    timeout plus a second, for TCP, TLS and HELLO) bounds only this call.
    """
    runner = shared_loop()
    cfg = Config.from_overrides(config, settings)
    bound = connect_timeout if connect_timeout is not None else 2 * cfg.handshake_timeout + 1.0
    check_timeout(bound)
    conn = runner.run(
        open_connection(host, port, cfg, ssl=ssl, server_hostname=server_hostname), bound
    )
    return Connection(runner, conn)
