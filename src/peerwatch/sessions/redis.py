"""A session store in Redis: a session resumes on any worker or host that reaches it.

What is kept, per session (keys ``<prefix><hex id>:meta`` and ``:replay``):
a SHA-256 of the token (a dump of Redis does not hand out credentials),
``next_seq``, ``acked_through``, ``consumed_through``, an owner ``epoch``, and
the replay buffer (one list entry per unacknowledged message: seq u64,
wall-clock enqueue time f64, payload). No inbox: a session rebuilt elsewhere
has received exactly what its application consumed, and the peer replays the
rest (it still holds them, unacknowledged).

When it is written: through, one round trip per event, before the event has an
effect the peer or the application can see: a message is stored before its
DATA is written (``sent``), a take is stored before the application gets the
message (``consumed``), an ACK trims the list when it arrives (``acked``). So a
SIGKILLed owner leaves exactly its books of that moment, and the next owner
neither loses nor repeats a message. The cost is a Redis round trip per write
(docs/SESSIONS.md has the measurements).

Ownership: ``resume`` checks the token and bumps the epoch in one Lua script
(atomic: no window in which two workers both think they won); every write is a
Lua script that first checks the writer's epoch, so a worker that lost the
session to another (the client reconnected elsewhere before this one noticed)
is fenced off with ``Fenced`` instead of writing over the new owner's books.

Expiry: keys carry a TTL of ``window`` seconds plus a grace. An attached
session's TTL is renewed every third of a window by one task per store (one
pipeline for all of them), a detached one's is left to run: the sessions of a
SIGKILLed owner vanish one window after its last sign of life, and the client
learns it at its next resume (SESSION_UNKNOWN, then SESSION_LOST with its exact
tail). The owner that parked a session also keeps
its deadline locally and, when it passes, ends the session and tells its
handler, unless another worker took it over meanwhile.

A Redis outage: every call raises ``StoreFailed`` (Redis stopped, refused, or
silent past the client's ``socket_timeout``: ``connect`` bounds each call by
the server's liveness timeout), one line naming the store and the reason; the
adapter ends that session with SESSION_LOST rather than go on with books
nobody keeps. Keys that vanished under an owner (Redis restarted without
persistence, or flushed) are ``StoreFailed`` too, never mistaken for a
take-over. Redis persistence (RDB/AOF) is the operator's choice: without it a
Redis restart loses every session.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import logging
import secrets
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

from redis.exceptions import RedisError

from peerwatch.core.frames import NO_SESSION_ID, SESSION_ID_SIZE, TOKEN_SIZE
from peerwatch.core.session import Session, SessionLimits, SessionLost, State
from peerwatch.errors import ConfigError, LocalProtocolError
from peerwatch.sessions.store import Fenced, Resumed, StoreFailed

log = logging.getLogger("peerwatch.sessions")

#: One replay-list entry: seq u64, wall-clock enqueue time f64 (seconds), then the payload.
ENTRY = struct.Struct("!Qd")

#: An attached session's TTL is renewed this many times per window.
RENEWALS_PER_WINDOW = 3


def ttl_seconds(window: float) -> float:
    """How long Redis keeps a session nobody renews: the window plus a grace.

    The owner that parked a session ends it itself when its window runs out, and
    must still find the keys then, to see whether another worker took the session
    over meanwhile; without the grace, Redis's clock and ours race at that moment.
    A client that resumes within the grace of a dead owner's session still gets it.
    """
    return window + max(1.0, window / 4)


# Every write script starts with the owner check. Results: 1 done, 0 fenced (another
# epoch), -1 out of order, -2 the keys are gone (expired, flushed, Redis restarted).
_OWNER = (
    "local epoch = redis.call('HGET', KEYS[1], 'epoch')\n"
    "if not epoch then return -2 end\n"
    "if epoch ~= ARGV[1] then return 0 end\n"
)
_TTL = "redis.call('PEXPIRE', KEYS[1], ARGV[2]) redis.call('PEXPIRE', KEYS[2], ARGV[2]) return 1\n"
# a message out of seq order (two unserialized senders) would tear the list: refused
_SENT = (
    _OWNER
    + "if tonumber(redis.call('HGET', KEYS[1], 'next_seq')) + 1 ~= tonumber(ARGV[3])"
    + " then return -1 end\n"
    + "redis.call('RPUSH', KEYS[2], ARGV[4]) redis.call('HSET', KEYS[1], 'next_seq', ARGV[3])\n"
    + _TTL
)
_ACKED = (
    _OWNER
    + "local old = tonumber(redis.call('HGET', KEYS[1], 'acked_through'))\n"
    + "local new = tonumber(ARGV[3])\n"
    + "if new > old then redis.call('LTRIM', KEYS[2], new - old, -1)"
    + " redis.call('HSET', KEYS[1], 'acked_through', new) end\n"
    + _TTL
)
_CONSUMED = _OWNER + "redis.call('HSET', KEYS[1], 'consumed_through', ARGV[3])\n" + _TTL
_TOUCH = _OWNER + _TTL
# KEYS meta, replay, hijack counter; ARGV token hash, ttl. 0: unknown, 1: wrong token
# (counted), else {epoch, next_seq, acked_through, consumed_through, replay entries}
_RESUME = (
    "local stored = redis.call('HGET', KEYS[1], 'token_hash')\n"
    "if not stored then return 0 end\n"
    "if stored ~= ARGV[1] then redis.call('INCR', KEYS[3]) return 1 end\n"
    "local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[2]) redis.call('PEXPIRE', KEYS[2], ARGV[2])\n"
    "local f = redis.call('HMGET', KEYS[1], 'next_seq', 'acked_through', 'consumed_through')\n"
    "return {epoch, f[1], f[2], f[3], redis.call('LRANGE', KEYS[2], 0, -1)}\n"
)
# the parker's end of a window: 1 the session is ours to end (and is deleted), 0 taken over;
# keys already gone (a parker later than the TTL's grace, Redis lost them): nobody can
# resume it any more, so it is ended here rather than by nobody
_END = (
    "local epoch = redis.call('HGET', KEYS[1], 'epoch')\n"
    "if epoch and epoch ~= ARGV[1] then return 0 end\n"
    "redis.call('DEL', KEYS[1], KEYS[2]) return 1\n"
)


def token_hash(token: bytes) -> bytes:
    """What Redis keeps instead of the token; compared inside Redis (see ``_RESUME``).

    Comparing hashes there leaks at most how many leading bytes of a SHA-256
    matched, which tells a prober nothing about the token itself.
    """
    return hashlib.sha256(token).digest()


class RedisStore:
    """Sessions in Redis, written through (``store.SessionStore``).

    ``client`` is a ``redis.asyncio.Redis`` (``connect(url, timeout=)`` makes
    one that cannot hang on a dead Redis). ``max_sessions`` caps the sessions
    this process owns (a flood of new-session HELLOs is refused with OVERLOADED
    past it, as with the in-process store). ``wall`` is the clock that carries
    enqueue times from one worker's monotonic clock to another's.
    """

    write_through = True
    shared = True

    def __init__(
        self,
        client: Any,
        limits: SessionLimits,
        *,
        prefix: str = "peerwatch:session:",
        max_sessions: int = 10_000,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if max_sessions < 1:
            raise ConfigError(f"max_sessions must be at least 1, got {max_sessions}")
        self.client = client
        self.limits = limits
        self.prefix = prefix
        self.max_sessions = max_sessions
        self.wall = wall
        self.hijack_attempts = 0  # seen by this process (``shared_hijack_attempts``: all)
        self._owned: dict[bytes, tuple[Session, bytes]] = {}  # session id -> (session, epoch)
        # (deadline, id) of detached sessions we own; stale entries are skipped (as in memory.py)
        self._deadlines: list[tuple[float, bytes]] = []
        self._ttl_ms = round(ttl_seconds(limits.window) * 1000)
        self._renew_every = limits.window / RENEWALS_PER_WINDOW
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False
        self.on_taken_over: Callable[[bytes], None] | None = None  # see SessionStore
        self._sent = client.register_script(_SENT)
        self._acked = client.register_script(_ACKED)
        self._consumed = client.register_script(_CONSUMED)
        self._touch = client.register_script(_TOUCH)
        self._resume = client.register_script(_RESUME)
        self._end = client.register_script(_END)

    def __len__(self) -> int:
        return len(self._owned)

    @contextlib.contextmanager
    def _reaching(self, doing: str) -> Iterator[None]:
        """Turn any redis-py failure into ``StoreFailed``: one line, where, what, why."""
        try:
            yield
        except RedisError as exc:
            reason = (str(exc).splitlines() or [""])[0] or type(exc).__name__
            raise StoreFailed(
                f"session store {describe(self.client)} unavailable while {doing}: {reason}"
            ) from exc

    def _keys(self, session_id: bytes) -> list[str]:
        base = self.prefix + session_id.hex()
        return [base + ":meta", base + ":replay"]

    @property
    def _hijacks_key(self) -> str:
        return self.prefix + "hijack_attempts"

    async def shared_hijack_attempts(self) -> int:
        """Wrong-token resumes counted by every worker sharing this Redis."""
        with self._reaching("reading the hijack count"):
            return int(await self.client.get(self._hijacks_key) or 0)

    # ------------------------------------------------------------ open and resume

    async def open(self, now: float) -> Session | None:
        if len(self._owned) >= self.max_sessions:
            return None
        session_id = secrets.token_bytes(SESSION_ID_SIZE)
        while session_id == NO_SESSION_ID:
            session_id = secrets.token_bytes(SESSION_ID_SIZE)
        token = secrets.token_bytes(TOKEN_SIZE)
        meta, _ = self._keys(session_id)
        fields = {"token_hash": token_hash(token), "epoch": 1, "next_seq": 1}
        fields.update(acked_through=0, consumed_through=0)
        with self._reaching("opening a session"):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(meta, mapping=fields)  # 128 random bits: no other session has this id
                pipe.pexpire(meta, self._ttl_ms)
                await pipe.execute()
        session = Session(session_id, token, self.limits, now)
        self._own(session, b"1")
        self._park_locally(session)  # detached until its first connection attaches it
        return session

    async def resume(self, session_id: bytes, token: bytes, now: float) -> Resumed | None:
        """Take the session over (from a dead or slower worker) if ``token`` is its own."""
        with self._reaching("resuming a session"):
            found = await self._resume(
                keys=[*self._keys(session_id), self._hijacks_key],
                args=[token_hash(token), self._ttl_ms],
            )
        if found == 1:
            self.hijack_attempts += 1
            return None
        if not found:
            return None
        epoch, next_seq, acked_through, consumed_through, entries = found
        mine = self._owned.get(session_id)
        if mine is not None and mine[0].ended:
            return None  # closed or lost here, its forget() not done yet: as the memory store
        took_over = mine is not None and mine[0].state is not State.DETACHED
        if mine is not None:
            mine[0].detach(now)  # our own old connection, if we have not noticed it died
            if int(epoch) == int(mine[1]) + 1:  # nobody owned it since: our copy is the books
                self._own(mine[0], str(epoch).encode())
                self._park_locally(mine[0])
                return Resumed(mine[0], took_over)
        wall_now = self.wall()
        kept = []
        for entry in entries:
            seq, enqueued_wall = ENTRY.unpack_from(entry)
            kept.append((seq, bytes(entry[ENTRY.size :]), now - (wall_now - enqueued_wall)))
        session = Session.restore(
            session_id,
            token,
            self.limits,
            now,
            next_seq=int(next_seq),
            acked_through=int(acked_through),
            consumed_through=int(consumed_through),
            replay=kept,
        )
        self._own(session, str(epoch).encode())
        self._park_locally(session)
        return Resumed(session, took_over)

    def _own(self, session: Session, epoch: bytes) -> None:
        self._owned[session.session_id] = (session, epoch)
        if (self._renewer is None or self._renewer.done()) and not self._closed:
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def aclose(self) -> None:
        """Stop renewing (the sessions' TTLs then run out unless another worker renews them)."""
        self._closed = True  # redis-py may turn our cancel into its own timeout: say it twice
        renewer, self._renewer = self._renewer, None
        if renewer is None:
            return
        renewer.cancel()
        if renewer.get_loop() is asyncio.get_running_loop():  # else its loop is gone already
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    # ------------------------------------------------------------ write-through

    async def _run(self, script: Any, session: Session, doing: str, *args: object) -> None:
        owned = self._owned.get(session.session_id)
        if owned is None or owned[0] is not session:
            raise Fenced("this worker no longer owns the session")
        with self._reaching(doing):
            done = await script(
                keys=self._keys(session.session_id), args=[owned[1], self._ttl_ms, *args]
            )
        if done == 1:
            return
        if done == -1:
            raise LocalProtocolError("messages stored out of order: serialize send() per session")
        self._owned.pop(session.session_id, None)
        if done == -2:
            raise StoreFailed(
                f"session store {describe(self.client)} lost the session while {doing}"
                " (its keys expired, or Redis restarted without persistence)"
            )
        self._taken_over(session.session_id)
        raise Fenced("another worker took the session over")

    def _taken_over(self, session_id: bytes) -> None:
        """Another worker holds the session now: tell the server (its copy lets go)."""
        if self.on_taken_over is not None:
            self.on_taken_over(session_id)

    async def sent(self, session: Session, seq: int, payload: bytes) -> None:
        """Keep message ``seq`` (``session.next_seq``) before the session numbers it.

        Calls for one session must not overlap: the list must grow in seq order.
        """
        entry = ENTRY.pack(seq, self.wall()) + payload
        await self._run(self._sent, session, f"keeping message {seq}", seq + 1, entry)

    async def acked(self, session: Session) -> None:
        """Drop the messages the peer acknowledged (``session.acked_through``)."""
        through = session.acked_through
        await self._run(self._acked, session, f"applying ACK {through}", through)

    async def consumed(self, session: Session, through: int | None = None) -> None:
        """Record the take of message ``through`` before the session takes it.

        If this raises, the application must not get it: the next owner replays it.
        ``through`` defaults to ``session.consumed_through`` (a take already made).
        """
        if through is None:
            through = session.consumed_through
        await self._run(self._consumed, session, f"recording take {through}", through)

    # ---------------------------------------------------------------- time

    async def park(self, session: Session) -> None:
        """The session lost its connection: its TTL runs from now, and so does our deadline."""
        self._park_locally(session)
        with contextlib.suppress(Fenced):  # taken over meanwhile: nothing left to park
            await self._run(self._touch, session, "parking a session")

    def _park_locally(self, session: Session) -> None:
        timer = session.get_timer()
        if session.state is State.DETACHED and timer is not None:
            heapq.heappush(self._deadlines, (timer, session.session_id))

    def next_deadline(self) -> float | None:
        """When ``expire`` may next have work (possibly early, never late)."""
        return self._deadlines[0][0] if self._deadlines else None

    async def expire(self, now: float, limit: int = 256) -> list[tuple[bytes, SessionLost]]:
        """End at most ``limit`` due detached sessions; never raises (a lost one is reported).

        A due session another worker took over is dropped here without a word
        (its new owner serves it); one whose books Redis lost is ended with the
        window's verdict all the same: it cannot resume anywhere.
        """
        ended: list[tuple[bytes, SessionLost]] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now and len(ended) < limit:
            _, session_id = heapq.heappop(deadlines)
            owned = self._owned.get(session_id)
            if owned is None or owned[0].state is not State.DETACHED:
                continue  # forgotten or taken over, or attached again: its connection drives it
            session, epoch = owned
            timer = session.get_timer()
            if timer is not None and timer > now:
                heapq.heappush(deadlines, (timer, session_id))  # detached again since
                continue
            session.handle_timer(now)
            if session.lost is None:
                continue
            del self._owned[session_id]
            try:
                ours = await self._end(keys=self._keys(session_id), args=[epoch])
            except RedisError as exc:
                # cannot ask: the keys expire now anyway (TTL = the same window), so the
                # session is reported lost here rather than never
                log.warning("%s: %s; session %s ended as lost", describe(self.client), exc,
                            session_id.hex())  # fmt: skip
                ours = 1
            if ours:
                ended.append((session_id, session.lost))
            else:
                self._taken_over(session_id)
        return ended

    async def _renew_forever(self) -> None:
        """Renew attached sessions' TTLs every third of a window while this store owns any."""
        while self._owned and not self._closed:
            await asyncio.sleep(self._renew_every)
            await self._renew()

    async def _renew(self) -> None:
        """One pipeline renewing the TTL of every attached session this process owns, and
        reading the owner of every detached one (its TTL is its window: not renewed).

        Either finds the sessions another worker took over: an idle one would otherwise
        keep its handler here waiting until this process stops (its next write, the
        first to be fenced, may never come). A vanished one is found out by its next
        write (StoreFailed) or its window.
        """
        owned = list(self._owned.values())
        if not owned:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for session, epoch in owned:
                    keys = self._keys(session.session_id)
                    if session.state is State.DETACHED:
                        pipe.hget(keys[0], "epoch")
                    else:  # queued in the pipeline, sent by execute()
                        await self._touch(keys=keys, args=[epoch, self._ttl_ms], client=pipe)
                results = await pipe.execute()
        except RedisError as exc:  # each session's next write says it (StoreFailed) to its owner
            log.warning("%s: renewing %d session TTLs failed: %s", describe(self.client),
                        len(owned), exc)  # fmt: skip
            return
        for (session, epoch), result in zip(owned, results, strict=True):
            if session.state is State.DETACHED:
                moved = result is not None and int(result) != int(epoch)
            else:
                moved = result == 0
            if moved and self._owned.get(session.session_id, (None,))[0] is session:
                del self._owned[session.session_id]
                self._taken_over(session.session_id)

    async def forget(self, session_id: bytes) -> None:
        owned = self._owned.pop(session_id, None)
        if owned is None:
            return  # not ours (any more): the new owner's books are not ours to delete
        try:
            await self._end(keys=self._keys(session_id), args=[owned[1]])
        except RedisError as exc:  # nobody waits for this: its TTL removes it one window later
            log.warning("%s: forgetting session %s failed: %s", describe(self.client),
                        session_id.hex(), exc)  # fmt: skip


# ---------------------------------------------------------------- connecting


#: What a ``--session-store`` URL may carry besides redis-py's own query options.
_URL_KEYS = {"host", "port", "db", "path", "username", "password", "connection_class"}


def check_url(url: str) -> str:
    """``url`` if redis-py can connect with it; else ``ConfigError`` saying what is wrong.

    redis-py's ``parse_url`` is the parser (one meaning of a Redis URL); it lets a
    few typos through silently (``/x`` as the database is dropped, an unknown query
    option fails only at the first command), which are refused here.
    """
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url

    try:
        options = parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ConfigError(f"session store {url!r}: {exc}") from None
    unknown = set(options) - _URL_KEYS - set(URL_QUERY_ARGUMENT_PARSERS)
    if unknown:
        raise ConfigError(f"session store {url!r}: unknown option(s) {', '.join(sorted(unknown))}")
    if url.startswith("unix://"):
        if "path" not in options:
            raise ConfigError(f"session store {url!r}: no socket path (unix:///path/redis.sock)")
        return url
    if "host" not in options:
        raise ConfigError(f"session store {url!r}: no host (redis://HOST:PORT/DB)")
    path = url.split("?", 1)[0].split("/", 3)[3:]
    if path and path[0] and not path[0].isdigit():
        raise ConfigError(f"session store {url!r}: the database is a number, not {path[0]!r}")
    return url


def connect(url: str, *, timeout: float) -> Any:
    """A ``redis.asyncio.Redis`` for ``url`` that cannot hang a worker on a dead Redis.

    redis-py waits forever by default; here each command and each connect is
    bounded by ``timeout`` (the server's liveness timeout), and a TCP socket gets
    peerwatch's keepalive and TCP_USER_TIMEOUT from the same budget.
    """
    import redis.asyncio

    from peerwatch.integrations.redis import connection_options

    tcp = not check_url(url).startswith("unix://")  # a Unix socket takes no TCP options
    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **(connection_options(timeout) if tcp else {}),
    )


def describe(client: Any) -> str:
    """``redis 127.0.0.1:6379/0`` or ``redis unix:/run/redis.sock``: where a client goes."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"redis unix:{kwargs['path']}"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"redis {host}:{port}/{db}"
