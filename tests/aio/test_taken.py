"""Messages the application takes are told to the protocol and the budget once per loop pass:
the window, the budget and the cumulative ACK must still see every one of them."""

from __future__ import annotations

import asyncio

import pytest

import peerwatch
from peerwatch.core.decoder import Decoder
from peerwatch.core.frames import PROTOCOL_VERSION, Ack, Hello, encode_data, encode_hello

pytestmark = pytest.mark.timeout(30)

HELLO = encode_hello(Hello(PROTOCOL_VERSION, 42, 0.5, 30.0, 1 << 20, 1 << 20))
COUNT = 50
SIZE = 1000


async def test_a_burst_taken_in_one_pass_resumes_reading_refunds_and_is_acked_once() -> None:
    seen: dict[str, object] = {}
    done = asyncio.Event()

    async def handler(conn: peerwatch.Connection) -> None:
        while not conn._reading_paused:  # 8 messages arrived: the window is full
            await asyncio.sleep(0.01)
        held = conn.held_bytes
        burst = len(conn._inbox)
        messages = [await conn.recv() for _ in range(burst)]  # no await suspends: one pass
        seen["burst"] = burst
        seen["held_drop"] = held - conn.held_bytes
        seen["resumed"] = not conn._reading_paused
        messages += [await conn.recv() for _ in range(COUNT - burst)]
        seen["all"] = messages == [bytes([i]) * SIZE for i in range(COUNT)]
        await asyncio.sleep(0.05)  # the pass that tells the protocol and the budget
        seen["budget_after"] = srv.budget.used
        done.set()
        await conn.wait_closed()

    # recv_queue 8: the first read pauses reading, taking the burst must resume it
    srv = await peerwatch.serve(handler, "127.0.0.1", 0, recv_queue=8, memory_budget=1 << 24)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        burst = b"".join(encode_data(i + 1, bytes([i]) * SIZE) for i in range(COUNT))
        writer.write(HELLO + burst)  # one write: the server may read it all at once
        await asyncio.wait_for(done.wait(), 10)
        burst = seen["burst"]
        assert isinstance(burst, int) and burst >= 8 and seen["held_drop"] == burst * SIZE
        assert seen["resumed"] and seen["all"]
        assert seen["budget_after"] == 0  # every taken byte given back to the budget
        decoder = Decoder(1 << 20)
        acks: list[int] = []
        while not acks or acks[-1] < COUNT:
            data = await asyncio.wait_for(reader.read(1 << 16), 5)
            assert data, "EOF before the ACK"
            acks += [f.seq for f in decoder.feed(data) if isinstance(f, Ack)]
        assert acks[-1] == COUNT and len(acks) <= COUNT // 5, acks  # cumulative, once per pass
        writer.close()
    finally:
        await srv.shutdown()
