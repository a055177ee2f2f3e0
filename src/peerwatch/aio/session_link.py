"""One TCP connection under a resumable session: a ``Connection`` driving a ``SessionProtocol``.

The transport, the shared timer, flushing, flow control and the verdict are the
plain connection's (``aio/connection.py``), reused as they are. What differs is
where things go: messages live in the session's inbox, not in this connection,
and every session event goes to the link's ``owner`` (the resumable connection,
or, on a server before the store lookup, the server itself). The link's
``ready`` future is done once both RESUMEs are exchanged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol as TypingProtocol
from typing import cast

from peerwatch.aio.connection import EAGER_ACK, INCARNATION, Connection
from peerwatch.core.budget import MemoryBudget
from peerwatch.core.config import Config
from peerwatch.core.frames import GoodbyeCode
from peerwatch.core.protocol import Acked, HandshakeDone, HangUp, Received, Role
from peerwatch.core.session import Session, SessionLost
from peerwatch.core.session_protocol import (
    Attached,
    SessionEnded,
    SessionProtocol,
    SessionRequest,
)
from peerwatch.core.verdicts import Verdict


class LinkOwner(TypingProtocol):
    """Who hears what happens on a link."""

    def link_request(self, link: SessionLink, request: SessionRequest) -> None: ...
    def link_attached(self, link: SessionLink, replayed: int) -> None: ...
    def link_received(self, link: SessionLink, count: int) -> None: ...
    def link_acked(self, link: SessionLink, through: int) -> None: ...
    def link_ended(self, link: SessionLink, lost: SessionLost | None) -> None: ...
    def link_lost(self, link: SessionLink, verdict: Verdict) -> None: ...


class SessionLink(Connection):
    __slots__ = ("owner",)

    def __init__(
        self,
        config: Config,
        role: Role,
        owner: LinkOwner,
        session: Session | None,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        incarnation: int | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        super().__init__(config, role, loop, incarnation=incarnation, budget=budget)
        now, wall = self._loop.time(), time.time()
        self._protocol = SessionProtocol(
            config,
            role,
            now,
            incarnation=INCARNATION if incarnation is None else incarnation,
            session=session,
            kernel=self._tcp_info,
            wall_offset=wall - now,
        )
        self.owner = owner

    @property
    def session_protocol(self) -> SessionProtocol:
        return cast(SessionProtocol, self._protocol)

    def accept_session(self, session: Session) -> None:
        """Server: the store lookup found ``session``: answer the client, then replay."""
        self.session_protocol.accept_session(session, self._loop.time())
        self._pump()
        self.poke()

    def refuse(self, code: GoodbyeCode, reason: str, detail: str) -> None:
        """Server: no session for this client: an all-zero HELLO, then GOODBYE(``code``)."""
        self.session_protocol.refuse(code, reason, detail, self._loop.time())
        self._pump()

    def poke(self) -> None:
        """Something to write (a message, an ACK due): one pass at the next loop turn."""
        if self._transport is not None and self._protocol.verdict is None:
            self._schedule_flush()

    def flush_now(self) -> None:
        """One pass at once unless writing is paused (as ``Connection.enqueue`` does for a
        sender enqueueing in a loop: the peer reads and ACKs while it goes on)."""
        if not self._protocol.writing_paused:
            self._flush()

    def taken(self, size: int) -> None:
        """The application took a message this link received: its receive window frees."""
        self._taken += 1
        self._taken_bytes += size
        if self._taken >= EAGER_ACK:
            # as ``Connection._take``: a consumer working through a long read ACKs now, not
            # once it yields, while a sender with a full window waits (issue 12)
            self._flush()
        elif not self._flush_scheduled:
            self.poke()
        if self._reading_paused and self._taken >= self._resume_after:
            # told once reading may resume, as ``Connection._take``: telling every message
            # taken behind a full receive window was 1/6 of a resumable message's bytecodes
            self._tell_taken()
            self._follow_reading()

    def _let_go(self) -> None:
        """The verdict is told: hold on to neither the session nor its owner. The event loop's
        timer may keep this dead link for up to ``timeout`` seconds, and a session ended as
        lost keeps every message it hands back: held through here, a client churning
        sessions would pin them all (measured: 60 MiB for 15 sessions of 4 MiB)."""
        self.owner = _NOBODY
        self.session_protocol.let_go()

    def _pump(self) -> None:
        """Write control frames, then hand each event to the owner, in order."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            for data in self._protocol.data_to_send(0):
                transport.write(data)
        owner = self.owner
        got_message = False
        for event in self.session_protocol.events_received():
            kind: type = type(event)
            if kind is Received:
                owner.link_received(self, len(cast(Received, event).messages))
                got_message = True
            elif kind is Acked:
                owner.link_acked(self, cast(Acked, event).through)
            elif kind is HandshakeDone:
                self._arm()
            elif kind is SessionRequest:
                owner.link_request(self, cast(SessionRequest, event))
            elif kind is Attached:
                if not self._waiters.ready.done():
                    self._waiters.ready.set_result(None)
                self._arm()
                owner.link_attached(self, cast(Attached, event).replayed)
            elif kind is SessionEnded:
                owner.link_ended(self, cast(SessionEnded, event).lost)
            elif kind is HangUp:
                self._hang_up(cast(HangUp, event).abort)
            else:
                verdict = cast(Verdict, event)
                self._on_verdict(verdict)
                owner.link_lost(self, verdict)
                self._let_go()
        if got_message:
            self._follow_reading()


class _Nobody:
    """The owner of a link whose verdict is told: whatever still arrives is dropped."""

    def link_request(self, link: SessionLink, request: SessionRequest) -> None:
        link.refuse(GoodbyeCode.GOING_AWAY, "connection over", "connection over")

    def link_attached(self, link: SessionLink, replayed: int) -> None: ...
    def link_received(self, link: SessionLink, count: int) -> None: ...
    def link_acked(self, link: SessionLink, through: int) -> None: ...
    def link_ended(self, link: SessionLink, lost: SessionLost | None) -> None: ...
    def link_lost(self, link: SessionLink, verdict: Verdict) -> None: ...


_NOBODY = _Nobody()
