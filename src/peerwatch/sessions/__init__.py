"""Where a server keeps its sessions between connections (issue 12).

``memory.MemoryStore`` keeps them in this process: fast, nothing to run, and
gone when the process goes (a restart ends every session with SESSION_LOST,
handing the unacknowledged messages back to the clients). A shared store
(Redis) that lets a session resume on another worker or host is the next step;
the interface it must offer is ``store.SessionStore``.
"""
