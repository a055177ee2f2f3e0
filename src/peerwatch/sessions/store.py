"""The one interface a session store offers the asyncio adapter, and what a resume returns.

Every call that may touch the network is a coroutine, so an in-process store and
a shared one (Redis) are driven the same way; the in-process one simply never
suspends. Every call that cares about time takes ``now`` from the adapter's clock
(``loop.time()``).

How the server adapter (``aio/resumable_server.py``) drives a store:

1. A client HELLO with the all-zero id: ``open(now)``; None means full
   (GOODBYE(OVERLOADED)).
2. A client HELLO with an id and token: ``resume(id, token, now)``; None means
   unknown, ended, or the wrong token (GOODBYE(SESSION_UNKNOWN) in every case;
   a wrong token also adds one to ``hijack_attempts``). A session the store
   returns is DETACHED and ready to ``attach``; ``took_over`` says the store
   detached it from a connection that still looked alive (the adapter closes
   that connection).
3. When ``write_through`` is True, the adapter awaits ``sent(session, seq,
   payload)`` *before* the message enters the session (``seq`` is
   ``session.next_seq``, the number it is about to get), so no DATA frame can
   carry a message the store does not have; ``consumed(session, through)``
   *before* taking message ``through`` from the inbox, so no ACK can cover a
   message whose take was not kept (a failure there hands it back); and
   ``acked(session)`` after an ACK released messages (``session.acked_through``).
   Calls for one session never overlap and come in seq order.
   When it is False (the in-process store) it never calls them: the session
   object is the store's copy, and a plain message pays nothing for the store.
4. When the connection ends without ending the session: ``session.detach(now)``
   then ``park(session)``; the store keeps the window's time from there.
5. ``expire(now)`` whenever ``next_deadline()`` has passed: the sessions whose
   window or replay bound ran out, ended (their ``SessionLost``), at most
   ``limit`` per call. The adapter tells each one's handler.
6. A session that ended (closed or lost): ``forget(id)``.

A store that can no longer keep a session's books raises ``StoreFailed`` (or
any exception) from a hook: the adapter ends that session with SESSION_LOST
rather than go on with books nobody keeps. ``Fenced`` means another worker took
the session over: the adapter drops its connection and does not end the session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

from peerwatch.core.session import Session, SessionLost
from peerwatch.errors import PeerwatchError


class Resumed(NamedTuple):
    session: Session
    took_over: bool  # it was still attached: the adapter must close the old connection


class Fenced(PeerwatchError):
    """Another worker took this session over: stop serving it here, do not end it."""


class StoreFailed(PeerwatchError):
    """The store cannot keep this session's books any more (e.g. it is unreachable)."""


class SessionStore(Protocol):
    """Sessions by id, for the asyncio adapter; see the module docstring for the call order."""

    #: True: ``sent``, ``consumed`` and ``acked`` must be awaited (the store keeps copies)
    write_through: bool

    #: True: the books outlive this process (another worker or host can resume the
    #: session), so a server shutting down lets its sessions go rather than ending them
    shared: bool

    #: Set by the server: called with a session's id when the store finds that another
    #: worker took over a session this process still serves (a fenced write, or the
    #: periodic renewal of an idle one), so the local copy lets go at once, not when
    #: this process stops
    on_taken_over: Callable[[bytes], None] | None

    #: attempts this process saw that named a live session with the wrong token (counted,
    #: then refused exactly as an unknown id is, so a prober cannot tell which ids exist)
    hijack_attempts: int

    async def open(self, now: float) -> Session | None:
        """A new session with a fresh id and token; None when the store is full."""
        ...

    async def resume(self, session_id: bytes, token: bytes, now: float) -> Resumed | None:
        """The session with this id *and* token, detached and ready to attach, or None."""
        ...

    async def sent(self, session: Session, seq: int, payload: bytes) -> None:
        """Keep message ``seq`` (``session.next_seq``) before the session numbers it."""
        ...

    async def consumed(self, session: Session, through: int) -> None:
        """Keep the take of message ``through`` before the session takes it."""
        ...

    async def acked(self, session: Session) -> None:
        """Drop what the peer acknowledged (``session.acked_through``)."""
        ...

    async def park(self, session: Session) -> None:
        """The adapter detached ``session`` from its dead connection: the store keeps time."""
        ...

    def next_deadline(self) -> float | None:
        """When ``expire`` may next have work (possibly early, never late); None: never."""
        ...

    async def expire(self, now: float, limit: int = ...) -> list[tuple[bytes, SessionLost]]:
        """End detached sessions whose window or replay bound ran out (at most ``limit``)."""
        ...

    async def forget(self, session_id: bytes) -> None:
        """Drop a session that ended (closed or lost)."""
        ...
