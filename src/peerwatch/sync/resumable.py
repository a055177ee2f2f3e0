"""A resumable session with blocking calls: ``sync.connect(..., resume=True)``.

The asyncio ``ResumableConnection`` does the work on the shared loop thread
(reconnects, replay, exactly-once delivery); this wrapper only hands it the
caller's calls, as ``sync.Connection`` does for one connection. Subscribers
are called on the loop thread: they must return quickly and must not make
blocking ``peerwatch.sync`` calls (those would wait on the thread that runs them).
"""

from __future__ import annotations

from peerwatch.aio.outages import Farewell, Outage, Subscriber
from peerwatch.aio.resumable import ResumableConnection as AioResumable
from peerwatch.sync.blocking import BlockingCalls
from peerwatch.sync.loop import DEFAULT_TIMEOUT


class ResumableConnection(BlockingCalls[AioResumable]):
    """A session's messages, exactly once and in order, with blocking calls.

    ``send``, ``enqueue``, ``recv`` and iteration survive the loss of the TCP
    connection under the session, within ``resume_timeout``; ``TimeoutError``
    from a call means only that the call's own wait ran out (a reconnect may be
    under way). The session's end is one verdict, SESSION_LOST handing back
    what the peer application did not take when it could not resume.
    """

    @property
    def session_id(self) -> bytes | None:
        return self.aio.session_id

    @property
    def connected(self) -> bool:
        """A TCP connection carries the session right now."""
        return self.aio.connected

    @property
    def acked_through(self) -> int:
        return self.aio.acked_through

    @property
    def history(self) -> list[Outage]:
        """One ``Outage`` per connection lost under the session (a copy: the loop appends)."""
        return list(self.aio.history)

    @property
    def attempts(self) -> int:
        """Reconnect attempts made (the first connection not counted)."""
        return int(getattr(self.aio, "attempts", 0))

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(event)`` for every ``Lost`` and ``Resumed``, on the loop thread.

        Registered on that thread before this returns: no event after the call is missed.
        """
        self._runner.run(_subscribe(self.aio, callback), DEFAULT_TIMEOUT)

    def wait_farewell(self, timeout: float = DEFAULT_TIMEOUT) -> Farewell | None:
        """Wait for the goodbye a ``close()`` during an outage owes the server (said, or given
        up at ``resume_timeout``); None when none was owed. The background loop keeps
        dialing for it after ``close()`` returns, for as long as the process runs."""
        return self._runner.run(self.aio.wait_farewell(), timeout)

    def __enter__(self) -> ResumableConnection:
        return self

    def __repr__(self) -> str:
        return f"<peerwatch.sync.ResumableConnection {self.aio!r}>"


async def _subscribe(conn: AioResumable, callback: Subscriber) -> None:
    conn.subscribe(callback)
