"""The client side of a resumable session: dial, resume, and reconnect with backoff.

``connect_resumable`` makes the first connection (a failure raises at once, as a
plain ``connect`` does: a typo should not wait ``resume_timeout``). After that,
whenever the connection under the session dies, a task reconnects at once,
then with exponential backoff and equal jitter (``core/backoff.py``) for at most
``resume_timeout`` seconds from the loss; each attempt sends HELLO and RESUME
at once, so a resume costs one round trip plus the replayed bytes. The session
ends with SESSION_LOST when the budget is spent (WINDOW), when the server no
longer knows it (UNKNOWN), or on any bound the session core enforces.

``close()`` during an outage returns its verdict at once and leaves the same
loop running as a *farewell*: the next attempt that resumes (the one in flight,
if any) writes nothing of the session and says GOODBYE at once, NORMAL or
SESSION_LOST as ``close()`` decided, so the server's handler ends when the
network is back. The farewell has the outage's budget: it gives up when
``resume_timeout`` from the loss is spent or the server no longer knows the
session, and then nothing of it is left running.
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
from peerwatch.core.session import LostCause, Session, SessionLimits
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

    async def dial(self) -> SessionLink:
        """One connection carrying the session: returns it once both RESUMEs are exchanged.

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
        return link

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

    def _deadline(self) -> float:
        """When the outage's budget runs out: ``resume_timeout`` after the loss."""
        return self._outage_since + self.resume_timeout

    def _still_dialing(self) -> bool:
        """Dial on while the session is detached and open, or owed a goodbye."""
        return self.link is None and (self.verdict is None or self._goodbye is not None)

    async def _reconnect(self) -> None:
        """Dial until the session resumes (or hears its goodbye), the budget is spent, or
        the session ends."""
        try:
            await self._dial_until_resumed()
        finally:
            if self._goodbye is not None:  # given up, or the loop was cancelled
                lost = self.session.lost
                if lost is not None and lost.cause is not LostCause.WINDOW:
                    why = lost.reason  # e.g. UNKNOWN: the server ended it already
                elif lost is not None or self._loop.time() >= self._deadline():
                    why = f"no connection within resume_timeout ({self.resume_timeout} s)"
                else:
                    why = "the reconnect loop was cancelled"
                self._end_farewell(False, f"goodbye not said: {why}")

    async def _dial_until_resumed(self) -> None:
        loop = self._loop
        session = self.session
        deadline = self._deadline()
        # the first attempt at once: a cut by a middlebox or a NAT costs one round trip;
        # a server that is down refuses it and the backoff (with jitter) spreads the rest
        delays = itertools.chain([0.0], self.backoff.delays(self.resume_timeout, random.random))
        for delay in delays:
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            if not self._still_dialing():
                return
            session.handle_timer(loop.time())  # the replay-age bound runs while detached
            if session.lost is not None or loop.time() >= deadline:
                break
            self.attempts += 1
            try:
                await self.dial()
                return
            except PeerwatchError:
                if not self._still_dialing():
                    return
                if session.lost is not None:  # the server no longer knows it (UNKNOWN)
                    break
            except Exception as exc:  # never let the reconnect loop die unseen
                log.warning("reconnect attempt to %s:%d failed: %r", self.host, self.port, exc)
        if self.verdict is None and self.link is None:
            session.handle_timer(max(loop.time(), deadline))
            if session.lost is not None:
                self._end_lost(session.lost)

    def link_attached(self, link: SessionLink, replayed: int) -> None:
        if self._goodbye is not None:  # closed during the outage: only the goodbye goes out
            self._say_goodbye(link)
            return
        if self.verdict is not None:  # ended otherwise while this attempt was under way
            why = "the session was closed while this connection resumed it"
            link.leave(GoodbyeCode.SESSION_LOST, why, why)
            return
        super().link_attached(link, replayed)

    def _say_goodbye(self, link: SessionLink) -> None:
        """The farewell resumed: say the GOODBYE ``close()`` owes, before any DATA.

        Called as the server's RESUME is handled: nothing of the session was written on
        this connection yet, and ``leave`` ends it at once (its verdict stops every later
        pass), so no message is sent twice. The RESUME acknowledged what the server's
        application took before the cut: any of those beyond what was acknowledged at
        ``close()`` were handed back by it, and are counted (``taken_anyway``)."""
        assert self._goodbye is not None
        code, reason = self._goodbye
        self._goodbye = None
        taken_anyway = self.session.acked_through - self._acked_at_close
        said = f"GOODBYE({code.name}) said on a new connection after the outage"
        link.leave(code, reason, f"session closed by this side: {said}")
        self._end_farewell(True, said, taken_anyway)

    def _owe_goodbye(self, code: GoodbyeCode, reason: str) -> bool:
        self._start_farewell(code, reason)
        task = self._reconnecting
        if task is None or task.done():  # not expected: the loop runs while detached
            self._reconnecting = self._loop.create_task(self._reconnect())
        return True

    def _finished(self) -> None:
        if self._goodbye is not None:
            return  # closed during the outage: the loop (and an attempt in flight) says it
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
