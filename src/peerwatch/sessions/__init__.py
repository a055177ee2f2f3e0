"""Where a server keeps its sessions between connections (issue 12).

One interface, ``store.SessionStore`` (coroutines, so an in-process store and a
shared one are driven alike; its docstring gives the order of the calls).

``memory.MemoryStore`` keeps them in this process: fast, nothing to run, and
gone when the process goes (a restart ends every session with SESSION_LOST,
handing the unacknowledged messages back to the clients).

``redis.RedisStore`` keeps them in Redis, written through, so a session resumes
on any worker or host that reaches the same Redis; expiry is Redis's TTL.
"""
