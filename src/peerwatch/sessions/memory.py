"""The in-process session store: a dict, fresh credentials from ``secrets``.

Trade-offs: nothing is written anywhere, so keeping a session costs no I/O and
a resume costs one dict lookup; and nothing survives this process, so a restart
(or a reconnect that a load balancer sends to another worker) finds no session
and the client ends it with SESSION_LOST and the exact unacknowledged tail.

A flood of new-session HELLOs would otherwise keep ``window`` seconds of state
each: ``max_sessions`` caps them, and the server refuses past it (OVERLOADED).
"""

from __future__ import annotations

import secrets

from peerwatch.core.frames import NO_SESSION_ID, SESSION_ID_SIZE, TOKEN_SIZE
from peerwatch.core.session import Session, SessionLimits, SessionLost, State
from peerwatch.errors import ConfigError
from peerwatch.sessions.store import Resumed


class MemoryStore:
    def __init__(self, limits: SessionLimits, max_sessions: int = 10_000) -> None:
        if max_sessions < 1:
            raise ConfigError(f"max_sessions must be at least 1, got {max_sessions}")
        self.limits = limits
        self.max_sessions = max_sessions
        self.hijack_attempts = 0
        self._sessions: dict[bytes, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, now: float) -> Session | None:
        if len(self._sessions) >= self.max_sessions:
            return None
        session_id = secrets.token_bytes(SESSION_ID_SIZE)
        while session_id == NO_SESSION_ID or session_id in self._sessions:  # 2**-128 each
            session_id = secrets.token_bytes(SESSION_ID_SIZE)
        session = Session(session_id, secrets.token_bytes(TOKEN_SIZE), self.limits, now)
        self._sessions[session_id] = session
        return session

    def resume(self, session_id: bytes, token: bytes, now: float) -> Resumed | None:
        session = self._sessions.get(session_id)
        if session is None or session.ended:
            return None
        if not session.authenticate(token):
            self.hijack_attempts += 1
            return None
        took_over = session.state is not State.DETACHED
        session.detach(now)  # the old connection, if the server has not noticed it died yet
        return Resumed(session, took_over)

    def expire(self, now: float) -> list[tuple[bytes, SessionLost]]:
        ended = []
        for session_id, session in list(self._sessions.items()):
            timer = session.get_timer()
            if timer is not None and now >= timer:
                session.handle_timer(now)
            if session.lost is not None:
                ended.append((session_id, session.lost))
                del self._sessions[session_id]
            elif session.ended:
                del self._sessions[session_id]
        return ended

    def forget(self, session_id: bytes) -> None:
        self._sessions.pop(session_id, None)
