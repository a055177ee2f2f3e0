"""A consumer working through a long read ACKs as it goes, every ``EAGER_ACK`` messages taken,
not only once the loop pass ends: a sender whose window is full waits for those ACKs."""

from __future__ import annotations

import asyncio

import pytest

import peerwatch
from peerwatch.aio.connection import EAGER_ACK
from peerwatch.core.decoder import Decoder
from peerwatch.core.frames import PROTOCOL_VERSION, Ack, Hello, encode_data, encode_hello

pytestmark = pytest.mark.timeout(30)

HELLO = encode_hello(Hello(PROTOCOL_VERSION, 42, 0.5, 30.0, 1 << 20, 1 << 20))
COUNT = 2 * EAGER_ACK + 88


async def test_a_long_burst_taken_in_one_pass_is_acked_every_eager_ack_messages() -> None:
    taken: list[bytes] = []
    done = asyncio.Event()

    async def handler(conn: peerwatch.Connection) -> None:
        while len(conn._inbox) < COUNT:  # the whole burst waits in the inbox
            await asyncio.sleep(0.01)
        taken.extend([await conn.recv() for _ in range(COUNT)])  # nothing suspends: one pass
        done.set()
        await conn.wait_closed()

    srv = await peerwatch.serve(handler, "127.0.0.1", 0, recv_queue=4 * COUNT)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        burst = b"".join(encode_data(i + 1, i.to_bytes(2, "big")) for i in range(COUNT))
        writer.write(HELLO + burst)
        await asyncio.wait_for(done.wait(), 10)
        assert taken == [i.to_bytes(2, "big") for i in range(COUNT)]
        decoder = Decoder(1 << 20)
        acks: list[int] = []
        while not acks or acks[-1] < COUNT:
            data = await asyncio.wait_for(reader.read(1 << 16), 5)
            assert data, "EOF before the last ACK"
            acks += [f.seq for f in decoder.feed(data) if isinstance(f, Ack)]
        # cumulative ACKs as the burst was taken, then the rest at the end of the pass
        assert acks == [EAGER_ACK, 2 * EAGER_ACK, COUNT], acks
        writer.close()
    finally:
        await srv.shutdown()
