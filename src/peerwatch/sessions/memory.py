"""The in-process session store: a dict, fresh credentials from ``secrets``.

Trade-offs: nothing is written anywhere, so keeping a session costs no I/O and
a resume costs one dict lookup; and nothing survives this process, so a restart
(or a reconnect that a load balancer sends to another worker) finds no session
and the client ends it with SESSION_LOST and the exact unacknowledged tail.

A flood of new-session HELLOs would otherwise keep ``window`` seconds of state
each: ``max_sessions`` caps them, and the server refuses past it (OVERLOADED).

Only detached sessions are the store's to expire (an attached one is driven by
its connection's timer): they wait in a heap by deadline, so ``expire`` costs
what is due, not what is stored. Scanning every session instead took 48 ms
per call with 10,000 sessions, a stall every neighbour's heartbeat would feel.
"""

from __future__ import annotations

import heapq
import secrets
from collections.abc import Callable

from peerwatch.core.frames import NO_SESSION_ID, SESSION_ID_SIZE, TOKEN_SIZE
from peerwatch.core.session import Session, SessionLimits, SessionLost, State
from peerwatch.errors import ConfigError
from peerwatch.sessions.store import Resumed

#: Sessions ended per ``expire`` call. A partition that detached 10,000 clients at
#: once ends them together one window later; losing each costs about 40 us here
#: (0.4 s for all 10,000 on the loaded 2-core CI machine), so the work is cut into
#: batches of about 10 ms and the adapter calls again on its next loop pass.
EXPIRE_BATCH = 256


class MemoryStore:
    """Sessions in a dict of this process (``store.SessionStore``; its coroutines never wait)."""

    #: the session objects are the books: nothing to write through
    write_through = False
    shared = False  # the books go when this process goes
    on_taken_over: Callable[[bytes], None] | None = None  # never: no other worker sees them

    def __init__(self, limits: SessionLimits, max_sessions: int = 10_000) -> None:
        if max_sessions < 1:
            raise ConfigError(f"max_sessions must be at least 1, got {max_sessions}")
        self.limits = limits
        self.max_sessions = max_sessions
        self.hijack_attempts = 0
        self._sessions: dict[bytes, Session] = {}
        # (deadline, id) of detached sessions; an entry may be stale (the session was
        # attached again, or detached again later): expire() checks before acting
        self._deadlines: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._sessions)

    async def open(self, now: float) -> Session | None:
        if len(self._sessions) >= self.max_sessions:
            return None
        session_id = secrets.token_bytes(SESSION_ID_SIZE)
        while session_id == NO_SESSION_ID or session_id in self._sessions:  # 2**-128 each
            session_id = secrets.token_bytes(SESSION_ID_SIZE)
        session = Session(session_id, secrets.token_bytes(TOKEN_SIZE), self.limits, now)
        self._sessions[session_id] = session
        self._park(session)  # detached until its first connection attaches it
        return session

    async def resume(self, session_id: bytes, token: bytes, now: float) -> Resumed | None:
        session = self._sessions.get(session_id)
        if session is None or session.ended:
            return None
        if not session.authenticate(token):
            self.hijack_attempts += 1
            return None
        took_over = session.state is not State.DETACHED
        session.detach(now)  # the old connection, if the server has not noticed it died yet
        self._park(session)
        return Resumed(session, took_over)

    async def sent(self, session: Session, seq: int, payload: bytes) -> None:
        """Nothing to keep: the session object is the book (``write_through`` is False)."""

    async def consumed(self, session: Session, through: int | None = None) -> None:
        """Nothing to keep: the session object is the book."""

    async def acked(self, session: Session) -> None:
        """Nothing to keep: the session object is the book."""

    async def park(self, session: Session) -> None:
        """The session lost its connection (the adapter called ``detach``): start its clock."""
        self._park(session)

    def _park(self, session: Session) -> None:
        timer = session.get_timer()
        if session.state is State.DETACHED and timer is not None:
            heapq.heappush(self._deadlines, (timer, session.session_id))

    def next_deadline(self) -> float | None:
        """When ``expire`` may next have work (possibly early, never late)."""
        return self._deadlines[0][0] if self._deadlines else None

    async def expire(
        self, now: float, limit: int = EXPIRE_BATCH
    ) -> list[tuple[bytes, SessionLost]]:
        """End at most ``limit`` due sessions; ``next_deadline() <= now`` says there are more."""
        ended: list[tuple[bytes, SessionLost]] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now and len(ended) < limit:
            _, session_id = heapq.heappop(deadlines)
            session = self._sessions.get(session_id)
            if session is None or session.state is not State.DETACHED:
                continue  # forgotten, or attached again: its connection drives it
            timer = session.get_timer()
            if timer is not None and timer > now:
                heapq.heappush(deadlines, (timer, session_id))  # detached again since
                continue
            session.handle_timer(now)
            if session.lost is not None:
                ended.append((session_id, session.lost))
                del self._sessions[session_id]
        return ended

    async def forget(self, session_id: bytes) -> None:
        self._sessions.pop(session_id, None)
