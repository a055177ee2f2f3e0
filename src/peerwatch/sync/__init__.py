"""Blocking peerwatch: the same connections, heartbeats and verdicts, without asyncio.

    from peerwatch import sync
    with sync.connect("127.0.0.1", 9000, interval=0.5, timeout=2.0) as conn:
        conn.send(b"hello", timeout=5)      # returns once the peer application has it
        reply = conn.recv(timeout=5)        # TimeoutError if nothing came; PeerDead if dead

Every blocking call takes a finite ``timeout``; heartbeats run on a shared
background loop, so the peer keeps hearing from us while the caller is busy.
"""

from peerwatch.sync.connection import Connection, Delivery, connect
from peerwatch.sync.loop import DEFAULT_TIMEOUT
from peerwatch.sync.server import Server, serve

__all__ = ["DEFAULT_TIMEOUT", "Connection", "Delivery", "Server", "connect", "serve"]
