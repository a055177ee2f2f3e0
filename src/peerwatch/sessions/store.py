"""The interface a session store offers the server, and the outcome of a resume attempt."""

from __future__ import annotations

from typing import NamedTuple, Protocol

from peerwatch.core.session import Session, SessionLost


class Resumed(NamedTuple):
    session: Session
    took_over: bool  # it was still attached: the adapter must close the old connection


class SessionStore(Protocol):
    """Sessions by id. Every call takes ``now`` from the adapter's clock."""

    #: attempts that named a live session with the wrong token (counted, then refused
    #: exactly as an unknown id is, so a prober cannot tell which ids exist)
    hijack_attempts: int

    def open(self, now: float) -> Session | None:
        """A new session with a fresh id and token; None when the store is full."""
        ...

    def resume(self, session_id: bytes, token: bytes, now: float) -> Resumed | None:
        """The session with this id *and* token, detached and ready to attach, or None."""
        ...

    def park(self, session: Session) -> None:
        """The adapter detached ``session`` from its dead connection: the store keeps time."""
        ...

    def expire(self, now: float, limit: int = ...) -> list[tuple[bytes, SessionLost]]:
        """End detached sessions whose window or replay bound ran out (at most ``limit``)."""
        ...

    def forget(self, session_id: bytes) -> None:
        """Drop a session that ended (closed or lost)."""
        ...
