"""A session store in Redis: a session resumes on any worker or host that reaches it.

What is kept, per session (keys ``<prefix><hex id>:meta`` and ``:replay``):
the token, ``next_seq``, ``acked_through``, ``consumed_through``, an owner
``epoch``, and the replay buffer (one list entry per unacknowledged message:
seq u64, wall-clock enqueue time f64, payload). No inbox: a session rebuilt
elsewhere has received exactly what its application consumed, and the peer
replays the rest (it still holds them, unacknowledged).

When it is written: through, one round trip per event, before the event has an
effect the peer or the application can see: a message is stored before its
DATA is written (``sent``), a take is stored before the application gets the
message (``consumed``), an ACK trims the list when it arrives (``acked``). So a
SIGKILLed owner leaves exactly its books of that moment, and the next owner
neither loses nor repeats a message. The cost is a Redis round trip per write:
``python -m bench.session_books`` measured 0.52 ms per message (its ``sent`` and
its ``acked``, over a Unix socket, on the shared 2-core CI machine), against
4 us for the in-process books: about 2,000 messages/s per session. Batching the
writes of one loop pass into one pipeline would cut that; it is not done yet.

Ownership: ``load`` bumps the epoch; every write is a Lua script that first
checks the writer's epoch, so a worker that lost the session to another (the
client reconnected elsewhere before this one noticed) is fenced off with
``Fenced`` instead of writing over the new owner's books.

Expiry: every write and ``touch`` (the owner calls it at least every half
window) sets a TTL of ``window`` seconds, so the sessions of a dead owner vanish
one window after its last sign of life; nobody is told (the client learns it at
its next resume: SESSION_UNKNOWN, then SESSION_LOST with its exact tail).

A Redis outage: every write raises ``redis.ConnectionError``; the adapter must
treat that session as not resumable (end it with SESSION_LOST) rather than go
on with books that are no longer kept. Redis persistence (RDB/AOF) is the
operator's choice: without it a Redis restart loses every session.
"""

from __future__ import annotations

import hmac
import secrets
import struct
import time
from collections.abc import Callable
from typing import Any

from peerwatch.core.frames import NO_SESSION_ID, SESSION_ID_SIZE, TOKEN_SIZE
from peerwatch.core.session import Session, SessionLimits
from peerwatch.errors import LocalProtocolError, PeerwatchError
from peerwatch.sessions.store import Resumed

#: One replay-list entry: seq u64, wall-clock enqueue time f64 (seconds), then the payload.
ENTRY = struct.Struct("!Qd")

_GUARD = "if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end\n"
_TTL = "redis.call('PEXPIRE', KEYS[1], ARGV[2]) redis.call('PEXPIRE', KEYS[2], ARGV[2]) return 1\n"
# a message out of seq order (two unserialized senders) would tear the list: refused
_SENT = (
    _GUARD
    + "if tonumber(redis.call('HGET', KEYS[1], 'next_seq')) + 1 ~= tonumber(ARGV[3])"
    + " then return -1 end\n"
    + "redis.call('RPUSH', KEYS[2], ARGV[4]) redis.call('HSET', KEYS[1], 'next_seq', ARGV[3])\n"
    + _TTL
)
_ACKED = (
    _GUARD
    + "local old = tonumber(redis.call('HGET', KEYS[1], 'acked_through'))\n"
    + "local new = tonumber(ARGV[3])\n"
    + "if new > old then redis.call('LTRIM', KEYS[2], new - old, -1)"
    + " redis.call('HSET', KEYS[1], 'acked_through', new) end\n"
    + _TTL
)
_CONSUMED = _GUARD + "redis.call('HSET', KEYS[1], 'consumed_through', ARGV[3])\n" + _TTL
_TOUCH = _GUARD + _TTL


class Fenced(PeerwatchError):
    """Another worker took this session over: stop serving it here, do not end it."""


class RedisStore:
    """Sessions in Redis, written through. ``client`` is a ``redis.asyncio.Redis``."""

    def __init__(
        self,
        client: Any,
        limits: SessionLimits,
        *,
        prefix: str = "peerwatch:session:",
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.limits = limits
        self.prefix = prefix
        self.wall = wall
        self._epochs: dict[bytes, bytes] = {}  # sessions this store owns -> epoch
        self._ttl_ms = round(limits.window * 1000)
        self._sent = client.register_script(_SENT)
        self._acked = client.register_script(_ACKED)
        self._consumed = client.register_script(_CONSUMED)
        self._touch = client.register_script(_TOUCH)

    def _keys(self, session_id: bytes) -> list[str]:
        base = self.prefix + session_id.hex()
        return [base + ":meta", base + ":replay"]

    @property
    def _hijacks_key(self) -> str:
        return self.prefix + "hijack_attempts"

    async def hijack_attempts(self) -> int:
        """Wrong-token resumes counted by every worker sharing this Redis."""
        return int(await self.client.get(self._hijacks_key) or 0)

    async def open(self, now: float) -> Session:
        session_id = secrets.token_bytes(SESSION_ID_SIZE)
        while session_id == NO_SESSION_ID:
            session_id = secrets.token_bytes(SESSION_ID_SIZE)
        token = secrets.token_bytes(TOKEN_SIZE)
        meta, _ = self._keys(session_id)
        fields = {"token": token, "epoch": 1, "next_seq": 1, "acked_through": 0}
        fields["consumed_through"] = 0
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(meta, mapping=fields)
            pipe.pexpire(meta, self._ttl_ms)
            await pipe.execute()
        self._epochs[session_id] = b"1"
        return Session(session_id, token, self.limits, now)

    async def load(self, session_id: bytes, token: bytes, now: float) -> Resumed | None:
        """Take the session over (from a dead or slower worker) if ``token`` is its own."""
        meta, replay = self._keys(session_id)
        stored = await self.client.hget(meta, "token")
        if stored is None:
            return None
        if not hmac.compare_digest(stored, token):
            await self.client.incr(self._hijacks_key)
            return None
        epoch = await self.client.hincrby(meta, "epoch", 1)
        took_over = session_id in self._epochs  # this worker still serves the old connection
        # read after the bump: the old owner's writes are fenced from here on
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(meta)
            pipe.lrange(replay, 0, -1)
            fields, entries = await pipe.execute()
        if not fields:
            return None  # expired between the two reads
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
            next_seq=int(fields[b"next_seq"]),
            acked_through=int(fields[b"acked_through"]),
            consumed_through=int(fields[b"consumed_through"]),
            replay=kept,
        )
        self._epochs[session_id] = str(epoch).encode()
        return Resumed(session, took_over)

    async def _run(self, script: Any, session: Session, *args: object) -> None:
        epoch = self._epochs.get(session.session_id)
        if epoch is None:
            raise Fenced("this store does not own the session")
        done = await script(keys=self._keys(session.session_id), args=[epoch, self._ttl_ms, *args])
        if done == -1:
            raise LocalProtocolError("messages stored out of order: serialize send() per session")
        if not done:
            self._epochs.pop(session.session_id, None)
            raise Fenced("another worker took the session over")

    async def sent(self, session: Session, seq: int, payload: bytes) -> None:
        """Keep message ``seq`` (numbered by ``session.send``) before its DATA is written.

        Calls for one session must not overlap: the list must grow in seq order.
        """
        entry = ENTRY.pack(seq, self.wall()) + payload
        await self._run(self._sent, session, seq + 1, entry)

    async def acked(self, session: Session) -> None:
        """Drop the messages the peer acknowledged (``session.acked_through``)."""
        await self._run(self._acked, session, session.acked_through)

    async def consumed(self, session: Session) -> None:
        """Record a take (``session.take()``) before the application gets the message.

        If this raises, the application must not get it: the next owner replays it.
        """
        await self._run(self._consumed, session, session.consumed_through)

    async def touch(self, session: Session) -> None:
        """Keep an idle session alive for another window (call at least every half window)."""
        await self._run(self._touch, session)

    async def forget(self, session_id: bytes) -> None:
        self._epochs.pop(session_id, None)
        await self.client.delete(*self._keys(session_id))
