"""What session bookkeeping and the Redis write-through cost, side by side in one run.

    python -m bench.session_books [--messages N]

1. Per-message CPU of the books alone, no sockets: the plain connection's
   ``Outbound``/``Inbound`` (number, reassemble, cumulative ACK) against a pair of
   ``Session`` objects doing the same (number, keep for replay, deliver, take,
   ACK). This bounds what resumability adds to a connection's CPU per message.
2. The Redis store's write-through: the same session traffic with every message
   stored (``sent``), every take stored (``consumed``) and every ACK applied
   (``acked``), against a redis-server started here on a Unix socket.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from peerwatch.core.delivery import Inbound, Outbound
from peerwatch.core.frames import Data
from peerwatch.core.session import Session, SessionLimits

PAYLOAD = b"m" * 100
LIMITS = SessionLimits(max_replay_bytes=1 << 30)


def plain_books(messages: int) -> float:
    out, inbound = Outbound(), Inbound(1 << 20)
    start = time.perf_counter()
    for _ in range(messages):
        seq = out.assign(PAYLOAD)
        out.sent_through = seq
        inbound.on_data(Data(seq, False, PAYLOAD))
        out.on_ack(seq)
    return time.perf_counter() - start


def session_pair() -> tuple[Session, Session]:
    sender = Session(bytes(16), bytes(32), LIMITS, 0.0)
    receiver = Session(bytes(16), bytes(32), LIMITS, 0.0)
    to_receiver, to_sender = sender.attach(0.0), receiver.attach(0.0)
    receiver.on_resume(to_receiver, 0.0)
    sender.on_resume(to_sender, 0.0)
    return sender, receiver


def session_books(messages: int) -> float:
    sender, receiver = session_pair()
    start = time.perf_counter()
    for _ in range(messages):
        sender.send(PAYLOAD, 0.0)
        for seq, payload in sender.outgoing():
            receiver.on_message(seq, payload)
        receiver.take()
        ack = receiver.ack_due()
        if ack is not None:
            sender.on_ack(ack)
    return time.perf_counter() - start


async def redis_books(messages: int, sock: Path) -> float:
    import redis.asyncio

    from peerwatch.sessions.redis import RedisStore

    client = redis.asyncio.Redis(unix_socket_path=str(sock))
    try:
        store = RedisStore(client, LIMITS)
        sender = await store.open(0.0)
        receiver = Session(sender.session_id, sender.token, LIMITS, 0.0)
        to_receiver, to_sender = receiver.attach(0.0), sender.attach(0.0)
        sender.on_resume(to_sender, 0.0)
        receiver.on_resume(to_receiver, 0.0)
        start = time.perf_counter()
        for _ in range(messages):
            seq = sender.send(PAYLOAD, 0.0)
            await store.sent(sender, seq, PAYLOAD)
            for message in sender.outgoing():
                receiver.on_message(*message)
            receiver.take()
            ack = receiver.ack_due()
            if ack is not None:
                sender.on_ack(ack)
                await store.acked(sender)
        return time.perf_counter() - start
    finally:
        await client.aclose()


def with_redis(messages: int) -> float | None:
    server = shutil.which("redis-server")
    if server is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        proc = subprocess.Popen(
            [server, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            return asyncio.run(redis_books(messages, sock))
        finally:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    n = args.messages
    plain = min(plain_books(n) for _ in range(3))
    session = min(session_books(n) for _ in range(3))
    print(f"books, {n} messages of {len(PAYLOAD)} B, best of 3:")
    print(f"  plain Outbound/Inbound  {plain / n * 1e6:6.2f} us/message")
    print(f"  Session pair            {session / n * 1e6:6.2f} us/message"
          f"  ({session / plain:.2f} x plain)")  # fmt: skip
    stored = with_redis(n // 20)
    if stored is not None:
        per = stored / (n // 20)
        print(f"  Session + RedisStore    {per * 1e6:6.2f} us/message"
              f"  (2 round trips per message: sent + acked)")  # fmt: skip


if __name__ == "__main__":
    main()
