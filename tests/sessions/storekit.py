"""The two session stores side by side, for the contract tests: in-process and a real Redis.

``Stores`` hands a test two "workers": two store objects over one shared
backend. For the in-process store both are the same object (one process is the
only worker it can serve); for Redis each has its own client to one real
redis-server on loopback (``peerwatch.testing.servers.start_redis``), so what
one writes the other reads, exactly as two ``serve --workers`` processes do.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from peerwatch.core.session import Session, SessionLimits
from peerwatch.sessions.memory import MemoryStore
from peerwatch.sessions.store import SessionStore
from peerwatch.testing.servers import Server

#: How long each Redis call may take before the store calls Redis unavailable.
REDIS_TIMEOUT = 1.0


@dataclass
class Stores:
    kind: str  # "memory" or "redis"
    limits: SessionLimits
    redis: Server | None = None
    _clients: list[Any] = field(default_factory=list)
    _stores: list[Any] = field(default_factory=list)
    _memory: MemoryStore | None = None

    @property
    def shared(self) -> bool:
        """True when a second worker (process) sees the first one's sessions."""
        return self.kind == "redis"

    def worker(self, **options: Any) -> SessionStore:
        """One more store object on the shared backend (the same object for memory)."""
        if self.kind == "memory":
            if self._memory is None:
                self._memory = MemoryStore(self.limits, **options)
            return self._memory
        from peerwatch.sessions.redis import RedisStore, connect

        assert self.redis is not None
        client = connect(self.url, timeout=REDIS_TIMEOUT)
        self._clients.append(client)
        store = RedisStore(client, self.limits, **options)
        self._stores.append(store)
        return store

    @property
    def url(self) -> str:
        assert self.redis is not None
        return f"redis://{self.redis.host}:{self.redis.port}/0"

    def freeze(self) -> None:
        """SIGSTOP redis-server: it keeps its sockets and answers nothing (a hung store)."""
        assert self.redis is not None and self.redis.proc is not None
        os.kill(self.redis.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.redis is not None and self.redis.proc is not None
        os.kill(self.redis.proc.pid, signal.SIGCONT)

    async def close(self) -> None:
        for store in self._stores:
            await store.aclose()
        for client in self._clients:
            await client.aclose()


@asynccontextmanager
async def stores(kind: str, limits: SessionLimits) -> AsyncIterator[Stores]:
    if kind == "memory":
        yield Stores(kind, limits)
        return
    from peerwatch.testing.servers import start_redis

    server = start_redis()
    made = Stores(kind, limits, redis=server)
    try:
        yield made
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)  # a frozen one must be able to die
        await made.close()
        server.stop()


def attach(session: Session, peer: Session, now: float) -> None:
    """Both sides' RESUME exchanged: ``session`` (the server's) is ATTACHED to ``peer``."""
    to_peer, to_session = session.attach(now), peer.attach(now)
    peer.on_resume(to_peer, now)
    session.on_resume(to_session, now)


def client_of(session: Session, limits: SessionLimits, now: float) -> Session:
    """The client's side of a session the server just opened."""
    return Session(session.session_id, session.token, limits, now)
