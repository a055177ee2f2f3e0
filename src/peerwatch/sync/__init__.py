"""Blocking peerwatch: the same connections, heartbeats and verdicts, without asyncio.

    from peerwatch import sync
    # interval/timeout: heartbeat settings, as in the asyncio API (dead after 2 s of silence)
    with sync.connect("127.0.0.1", 9000, interval=0.5, timeout=2.0) as conn:
        conn.send(b"hello", timeout=5)      # returns once the peer application has it
        reply = conn.recv(timeout=5)        # TimeoutError if nothing came; PeerDead if dead
        for message in conn:                # waits for the next message or the verdict
            ...

Every blocking call on a connection takes a finite ``timeout`` (its own wait,
``DEFAULT_TIMEOUT`` if not given); ``connect`` takes ``connect_timeout``.
Iteration has no call deadline: heartbeats decide when a quiet peer is dead.
Heartbeats run on a shared background loop, so the peer keeps hearing from us
while the caller is busy. ``connect(..., resume=True)`` gives a resumable
session (``ResumableConnection``) with the same blocking calls.
"""

from peerwatch.sync.blocking import Delivery
from peerwatch.sync.connection import Connection, connect
from peerwatch.sync.loop import DEFAULT_TIMEOUT
from peerwatch.sync.resumable import ResumableConnection
from peerwatch.sync.server import Server, serve

__all__ = [
    "DEFAULT_TIMEOUT",
    "Connection",
    "Delivery",
    "ResumableConnection",
    "Server",
    "connect",
    "serve",
]
