"""What a resumable connection remembers of its connections and tells its subscribers.

An ``Outage`` per underlying connection that died while the session went on;
``Lost`` when it happens and ``Resumed`` when a new connection carries the
session again. The connection's own ``Verdict`` (cause, detail, when) stays
visible in the outage, so "why did we reconnect" never needs a log. A
``Farewell`` says how the goodbye of a ``close()`` made during an outage went
(``ResumableConnection.wait_farewell``); it is no ``SessionEvent``: the session
is over by then, and subscribers written for ``Lost | Resumed`` stay right.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from peerwatch.core.verdicts import Verdict


@dataclass
class Outage:
    """One underlying connection lost; filled in when the session resumes."""

    verdict: Verdict  # the lost connection's verdict: cause, detail, detected_at
    lost_at: float  # loop time the session was detached
    resumed_at: float | None = None  # loop time a new connection carried it again; None while out
    replayed: int = 0  # messages this side wrote again after the resume

    @property
    def outage(self) -> float | None:
        """Seconds without a connection; None while the session is still out."""
        return None if self.resumed_at is None else self.resumed_at - self.lost_at


@dataclass(frozen=True)
class Lost:
    """The connection under the session died; the session waits for a new one."""

    verdict: Verdict
    at: float


@dataclass(frozen=True)
class Resumed:
    """A new connection carries the session again."""

    outage: float  # seconds without a connection
    replayed: int  # messages this side wrote again
    at: float


@dataclass(frozen=True)
class Farewell:
    """How the goodbye of a ``close()`` called while the session was detached went.

    The client kept dialing (same backoff, same ``resume_timeout`` budget from the
    loss) to tell the server the session is over, so the server's handler ends as
    soon as the network lets the goodbye through instead of a ``resume_window`` later.
    """

    said: bool  # True: the server got our GOODBYE; False: given up (``detail`` says why)
    detail: str  # one line for humans
    at: float  # loop time of the outcome
    # the first ``taken_anyway`` messages of the close verdict's ``undelivered`` were taken
    # by the server's application after all: their ACKs were lost in the outage (the
    # RESUME of the farewell told; PROTOCOL.md 8.8). Always 0 when ``said`` is False.
    taken_anyway: int = 0


SessionEvent = Lost | Resumed
Subscriber = Callable[[SessionEvent], None]
