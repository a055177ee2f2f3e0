"""Resumable sessions on ``serve --workers N``: which store each worker uses, and checking it.

With the in-process store every worker keeps its own sessions: a reconnect
that the kernel's SO_REUSEPORT hash sends to another worker (or one after the
worker died) finds nothing there and the client ends its session with
SESSION_LOST, handing back exactly what was not acknowledged. With a Redis
store every worker reads and writes the same books, so the session resumes on
whichever worker the reconnect lands on (``peerwatch.sessions.redis``).

The supervisor checks the store answers before it starts any worker: a Redis
that is down or mistyped is one line at start-up, not N workers failing at the
first HELLO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peerwatch.core.config import Config
from peerwatch.core.session import SessionLimits
from peerwatch.errors import ConfigError
from peerwatch.sessions.store import StoreFailed

#: Seconds a detached session is kept when a store is named but no window (the library's).
DEFAULT_WINDOW = 30.0


@dataclass(frozen=True)
class SessionSettings:
    """What each worker needs to serve sessions (picklable: it goes to a fresh interpreter)."""

    limits: SessionLimits  # window = resume_window
    store_url: str | None  # None: the worker's own memory
    store_timeout: float  # bound on each store call: the liveness timeout

    def describe(self) -> str:
        """``sessions redis 127.0.0.1:6379/0, window 30 s`` for the ready line."""
        where = "in each worker's memory" if self.store_url is None else self.store_url
        return f"sessions {where}, window {self.limits.window:g} s"


def session_settings(
    resume_window: float | None, session_store: str | None, config: Config
) -> SessionSettings | None:
    """The settings, or None for a plain server; ``ConfigError`` names what is wrong."""
    if resume_window is None and session_store is None:
        return None
    window = DEFAULT_WINDOW if resume_window is None else resume_window
    url = None if session_store in (None, "memory") else session_store
    if url is not None:
        try:
            from peerwatch.sessions.redis import check_url
        except ImportError as exc:
            raise ConfigError(
                f"session store {url!r} needs redis-py: pip install 'peerwatch[sessions]'"
            ) from exc
        check_url(url)
    limits = SessionLimits(window=window)  # ConfigError for a window that cannot work
    return SessionSettings(limits=limits, store_url=url, store_timeout=config.timeout)


def check_store(settings: SessionSettings) -> None:
    """Ask the store to answer once, from the supervisor; ``StoreFailed`` with the reason."""
    if settings.store_url is None:
        return
    import redis
    from redis.exceptions import RedisError

    from peerwatch.sessions.redis import describe

    client = redis.Redis.from_url(
        settings.store_url,
        socket_timeout=settings.store_timeout,
        socket_connect_timeout=settings.store_timeout,
    )
    try:
        client.ping()
    except RedisError as exc:
        reason = (str(exc).splitlines() or [""])[0] or type(exc).__name__
        raise StoreFailed(f"session store {describe(client)} does not answer: {reason}") from exc
    finally:
        client.close()


async def open_store(settings: SessionSettings) -> tuple[Any, Any]:
    """This worker's store (None: the adapter's in-process one) and what closes it."""
    if settings.store_url is None:
        return None, None
    from peerwatch.sessions.redis import RedisStore, connect

    client = connect(settings.store_url, timeout=settings.store_timeout)
    return RedisStore(client, settings.limits), client.aclose
