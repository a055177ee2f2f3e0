"""``Protocol.offer``, the one-call send path, queues exactly when ``has_room`` says a message
fits and keeps the books ``Outbound.assign`` keeps (it writes both out for speed), and checks
what ``send`` checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerwatch.core.config import Config
from peerwatch.core.delivery import Outbound
from peerwatch.core.protocol import Protocol, Received
from peerwatch.errors import LocalProtocolError


def connected(config: Config) -> tuple[Protocol, Protocol]:
    client = Protocol(config, "client", 0.0, incarnation=1)
    server = Protocol(config, "server", 0.0, incarnation=2)
    client.connection_made(0.0)
    server.connection_made(0.0)
    deliver(client, server)
    deliver(server, client)
    return client, server


def deliver(sender: Protocol, receiver: Protocol) -> list[bytes]:
    """Everything ``sender`` has goes to ``receiver``, whose application takes every message."""
    receiver.receive_data(b"".join(sender.data_to_send()), 1.0)
    messages = [m for e in receiver.events_received() if type(e) is Received for m in e.messages]
    receiver.consumed(sum(map(len, messages)), 1.0, len(messages))
    return messages


@given(
    send_queue=st.integers(1, 6),
    send_buffer=st.integers(1, 300),
    steps=st.lists(st.tuples(st.integers(0, 150), st.booleans()), max_size=25),
)
def test_offer_queues_exactly_when_has_room_says_it_fits_and_books_as_assign(
    send_queue: int, send_buffer: int, steps: list[tuple[int, bool]]
) -> None:
    client, server = connected(Config(send_queue=send_queue, send_buffer=send_buffer))
    queued: list[bytes] = []
    received: list[bytes] = []
    books = Outbound()  # the reference: assign, and the same ACKs
    for size, acknowledge in steps:
        payload = bytes([len(queued) % 256]) * size
        fits = client.has_room(size)
        seq = client.offer(payload)
        assert bool(seq) == fits
        if seq:
            queued.append(payload)
            assert seq == len(queued) == books.assign(payload)
        if acknowledge:
            received += deliver(client, server)
            deliver(server, client)  # the ACK
            books.sent_through = client.outbound.sent_through
            books.on_ack(client.outbound.acked_through)
        out = client.outbound
        assert (list(out.unacked), out.unacked_bytes, out.next_seq) == (
            list(books.unacked),
            books.unacked_bytes,
            books.next_seq,
        )
    received += deliver(client, server)
    assert received == queued


def test_offer_refuses_what_send_refuses() -> None:
    client, _ = connected(Config())
    assert client.peer_hello is not None
    with pytest.raises(LocalProtocolError, match="exceeds the peer's max_message"):
        client.offer(bytes(client.peer_hello.max_message + 1))
    assert client.in_flight == 0
