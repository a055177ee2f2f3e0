"""Exceptions raised by peerwatch.

One root, two kinds of trouble, mirroring trio's Closed/Broken split::

    PeerwatchError
     ├── ConfigError          settings that cannot work together (raised at configuration time)
     ├── ProtocolError        bytes that break the peerwatch wire protocol
     │    ├── LocalProtocolError   this side tried to do something the protocol forbids
     │    └── RemoteProtocolError  the peer sent something the protocol forbids
     │         └── MessageTooBig   a message over our max_message (GOODBYE MESSAGE_TOO_BIG)
     ├── QueueFull            enqueue_nowait found the send queue full (nothing was queued)
     ├── ConnectionClosed     this side closed the connection (your code did it)
     ├── PeerDead             the outside world ended it: carries the Verdict
     │    └── HandshakeFailed the peer never completed HELLO within the handshake timeout
     └── RemedyRefused        the kernel or our privileges forbid acting on another
                              process's socket (SOCK_DESTROY, pidfd_getfd)

``PeerDead.verdict`` says why (cause), since when, and what was not delivered.
"""

from __future__ import annotations

#: typing.TYPE_CHECKING without importing typing (the protection bootstrap loads this module)
TYPE_CHECKING = False

if TYPE_CHECKING:
    from peerwatch.core.verdicts import Verdict


class PeerwatchError(Exception):
    """Root of every exception peerwatch raises on purpose."""


class ConfigError(PeerwatchError, ValueError):
    """Settings that contradict each other or the platform."""


class ProtocolError(PeerwatchError):
    """Bytes that break the wire protocol; the message names what was wrong."""


class LocalProtocolError(ProtocolError):
    """This side asked for something the protocol forbids (e.g. a message over max_frame)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


class MessageTooBig(RemoteProtocolError):
    """The peer sent a message over the max_message we announced; it is told so by name."""


class QueueFull(PeerwatchError):
    """``enqueue_nowait`` found the send window full (``send_queue`` messages or
    ``send_buffer`` bytes unacknowledged): nothing was queued. ``await enqueue`` waits instead."""


class ConnectionClosed(PeerwatchError):
    """The connection was closed by this side; its verdict has cause LOCAL."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(f"connection closed locally: {verdict.describe()}")
        self.verdict = verdict


class PeerDead(PeerwatchError):
    """The peer is gone; ``verdict`` says why, since when, and what was not delivered."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.describe())
        self.verdict = verdict


class HandshakeFailed(PeerDead):
    """No valid HELLO from the peer within the handshake timeout."""


class RemedyRefused(PeerwatchError):
    """A host-wide remedy the kernel or this process's privileges do not allow; says which.

    Raised before anything was changed, or at the first socket the kernel refused,
    never after a partial change that goes unreported.
    """
