"""The client side of a resumable session: dial, resume, and reconnect with backoff.

``connect_resumable`` makes the first connection (a failure raises at once, as a
plain ``connect`` does: a typo should not wait ``resume_timeout``). After that,
whenever the connection under the session dies, a task reconnects at once,
then with exponential backoff and equal jitter (``core/backoff.py``) for at most
``resume_timeout`` seconds from the loss; each attempt sends HELLO and RESUME
at once, so a resume costs one round trip plus the replayed bytes. The session
ends with SESSION_LOST when the budget is spent (WINDOW), when the server no
longer knows it (UNKNOWN), or on any bound the session core enforces.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl as ssl_module
import time

from peerwatch.aio.resumable import ResumableConnection
from peerwatch.aio.session_link import SessionLink
from peerwatch.aio.sockets import tune
from peerwatch.core.backoff import Backoff
from peerwatch.core.config import Config
from peerwatch.core.frames import NO_SESSION_ID, NO_TOKEN, GoodbyeCode
from peerwatch.core.session import Session, SessionLimits
from peerwatch.core.verdicts import Verdict, connect_failure, errno_name
from peerwatch.errors import PeerDead, PeerwatchError

log = logging.getLogger("peerwatch")


class ResumableClient(ResumableConnection):
    """A resumable connection that dials its server again whenever its connection dies."""

    def __init__(
        self,
        config: Config,
        limits: SessionLimits,
        host: str,
        port: int,
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        local_addr: tuple[str, int] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(config, Session(NO_SESSION_ID, NO_TOKEN, limits, loop.time()), loop)
        self.host = host
        self.port = port
        self.resume_timeout = limits.window
        self.backoff = backoff or Backoff()
        self.attempts = 0  # reconnect attempts made (the first connection not counted)
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._local_addr = local_addr
        self._outage_since = 0.0
        self._reconnecting: asyncio.Task[None] | None = None
        self._dialing: SessionLink | None = None

    async def dial(self) -> None:
        """One connection carrying the session: returns once both RESUMEs are exchanged.

        Raises ``PeerDead`` (or ``HandshakeFailed``) whose verdict says why not.
        """
        loop = self._loop
        cfg = self.config
        started = loop.time()
        try:
            making = loop.create_connection(
                lambda: SessionLink(cfg, "client", self, self.session, loop),
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=(self._server_hostname or self.host) if self._ssl else None,
                local_addr=self._local_addr,
            )
            transport, link = await asyncio.wait_for(making, cfg.handshake_timeout)
        except (OSError, UnicodeError, asyncio.TimeoutError) as exc:
            error = (
                exc
                if not isinstance(exc, asyncio.TimeoutError)
                else TimeoutError(f"no TCP connection within {cfg.handshake_timeout} s")
            )
            raise self._failed(error, started) from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            tune(sock, cfg)
        self._dialing = link
        try:
            await asyncio.wait_for(asyncio.shield(link.ready), 2 * cfg.handshake_timeout)
        except asyncio.TimeoutError as exc:
            transport.abort()
            raise self._failed(TimeoutError("no RESUME from the server in time"), started) from exc
        finally:
            self._dialing = None

    def _failed(self, exc: BaseException, started: float) -> PeerDead:
        cause, why = connect_failure(exc)
        return PeerDead(
            Verdict(
                cause=cause,
                detail=f"could not connect to {self.host}:{self.port}: {why}",
                detected_at=self._loop.time(),
                silent_for=self._loop.time() - started,
                errno=errno_name(exc),
                detected_wall=time.time(),
            )
        )

    # -------------------------------------------------------------- reconnecting

    def _detached(self) -> None:
        self._outage_since = self.session.detached_since
        self._reconnecting = self._loop.create_task(self._reconnect())

    def _attempt_failed(self, link: SessionLink, verdict: Verdict) -> None:
        # the attempt attached the session (RESUMING): detach it again, and keep the
        # outage's clock running from the loss, not from this attempt
        self.session.detach(self._loop.time())
        if self.history:
            self.session.detached_since = self._outage_since

    async def _reconnect(self) -> None:
        """Dial until the session resumes, the budget is spent, or the session ends."""
        loop = self._loop
        session = self.session
        deadline = self._outage_since + self.resume_timeout
        # the first attempt at once: a cut by a middlebox or a NAT costs one round trip;
        # a server that is down refuses it and the backoff (with jitter) spreads the rest
        delays = itertools.chain([0.0], self.backoff.delays(self.resume_timeout, random.random))
        for delay in delays:
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            if self.verdict is not None or self.link is not None:
                return
            session.handle_timer(loop.time())  # the replay-age bound runs while detached
            if session.lost is not None or loop.time() >= deadline:
                break
            self.attempts += 1
            try:
                await self.dial()
                return
            except PeerwatchError:
                if self.verdict is not None:
                    return
            except Exception as exc:  # never let the reconnect loop die unseen
                log.warning("reconnect attempt to %s:%d failed: %r", self.host, self.port, exc)
        if self.verdict is None and self.link is None:
            session.handle_timer(max(loop.time(), deadline))
            if session.lost is not None:
                self._end_lost(session.lost)

    def link_attached(self, link: SessionLink, replayed: int) -> None:
        if self.verdict is not None:  # closed while this attempt was under way
            why = "the session was closed while this connection resumed it"
            link.leave(GoodbyeCode.SESSION_LOST, why, why)
            return
        super().link_attached(link, replayed)

    def _finished(self) -> None:
        task = self._reconnecting
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        dialing = self._dialing
        if dialing is not None and dialing.transport is not None:
            dialing.transport.abort()


async def connect_resumable(
    host: str,
    port: int,
    config: Config,
    limits: SessionLimits,
    *,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    local_addr: tuple[str, int] | None = None,
) -> ResumableConnection:
    """Open a new session with the server at ``host:port``; see the module docstring."""
    client = ResumableClient(
        config,
        limits,
        host,
        port,
        ssl=ssl,
        server_hostname=server_hostname,
        local_addr=local_addr,
    )
    await client.dial()
    return client
