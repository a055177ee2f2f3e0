"""Where a server keeps its sessions between connections (issue 12).

``memory.MemoryStore`` keeps them in this process: fast, nothing to run, and
gone when the process goes (a restart ends every session with SESSION_LOST,
handing the unacknowledged messages back to the clients). It offers the
synchronous ``store.SessionStore`` interface.

``redis.RedisStore`` keeps them in Redis, written through, so a session resumes
on any worker or host that reaches the same Redis. Its calls are coroutines
(``open``, ``load``, and the write-through hooks ``sent``, ``acked``,
``consumed``, ``touch``); expiry is Redis's TTL. The asyncio adapter that drives
either store is not written yet (docs/PROTOCOL.md section 8.9).
"""
