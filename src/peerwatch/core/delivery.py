"""Delivery bookkeeping: sequence numbers, cumulative ACKs, reassembly of chunks.

Pure state: no I/O, no clock. The outbound side remembers every message until
the peer acknowledges it, so a death can hand back exactly what was not
delivered; the inbound side enforces in-order, gap-free sequences and bounds
a reassembled message by ``max_message``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from peerwatch.core.frames import MIN_CHUNK, Data, max_parts
from peerwatch.errors import MessageTooBig, RemoteProtocolError


class _Unused(deque):  # type: ignore[type-arg]
    """The shared, empty stand-in for a queue nothing was ever put in.

    An empty ``collections.deque`` allocates its first 64-slot block at once
    (760 bytes); an idle connection would pay that for each of its queues. Reads
    (``len``, truth, iteration) work on the stand-in; a write means a missing
    ``is UNUSED`` check and fails loudly instead of sharing data between queues.
    """

    def append(self, item: object) -> None:
        raise RuntimeError("write to the shared empty queue")

    appendleft = extend = extendleft = insert = append  # type: ignore[assignment]


#: See ``_Unused``.
UNUSED: deque[Any] = _Unused()


class Outbound:
    """Messages handed to the connection and not yet acknowledged, in sequence order."""

    __slots__ = ("acked_through", "next_seq", "sent_through", "unacked")

    def __init__(self) -> None:
        self.next_seq = 1
        self.sent_through = 0  # highest seq whose last byte was handed to the transport
        self.acked_through = 0  # highest seq the peer acknowledged (cumulative)
        self.unacked: deque[tuple[int, bytes]] = UNUSED  # made by the first assign()

    def assign(self, payload: bytes) -> int:
        seq = self.next_seq
        self.next_seq = seq + 1
        unacked = self.unacked
        if unacked is UNUSED:
            unacked = self.unacked = deque()
        unacked.append((seq, payload))
        return seq

    @property
    def in_flight(self) -> int:
        """Messages assigned and not yet acknowledged."""
        return len(self.unacked)

    def on_ack(self, seq: int) -> int:
        """Apply a cumulative ACK; return how many messages it newly acknowledged."""
        if seq > self.sent_through:
            raise RemoteProtocolError(
                f"ACK for sequence {seq}, but only {self.sent_through} were ever sent"
            )
        if seq < self.acked_through:
            raise RemoteProtocolError(
                f"ACK went backwards: {seq} after {self.acked_through} (ACKs are cumulative)"
            )
        unacked = self.unacked
        count = 0
        while unacked and unacked[0][0] <= seq:
            unacked.popleft()
            count += 1
        self.acked_through = seq
        return count

    def undelivered(self) -> tuple[bytes, ...]:
        return tuple(payload for _, payload in self.unacked)


class Inbound:
    """Checks DATA sequencing and reassembles chunked messages, bounded by ``max_message``.

    A message in parts is assembled in one ``bytearray``, so it costs its own size
    and not a bytes object per part (2-byte chunks cost 29 x the message as a
    list of parts). Every part counts: an empty chunk with MORE set is refused
    (it would grow the part count for free), and so is a message in more than
    ``max_parts(max_message)`` parts.
    """

    __slots__ = ("_assembly", "_parts", "expected_seq", "max_message", "max_parts")

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self.max_parts = max_parts(max_message)
        self.expected_seq = 1
        self._assembly: bytearray | None = None  # the message so far, from its first chunk
        self._parts = 0

    @property
    def received_through(self) -> int:
        """Highest seq of a complete message received (what a cumulative ACK reports)."""
        return self.expected_seq - 1

    @property
    def partial(self) -> int:
        """Bytes held for a message whose last chunk has not arrived."""
        return 0 if self._assembly is None else len(self._assembly)

    def on_data(self, frame: Data) -> bytes | None:
        """Take one DATA frame; return the message once its last chunk arrived."""
        if frame.seq != self.expected_seq:
            raise RemoteProtocolError(
                f"DATA with sequence {frame.seq}, expected {self.expected_seq}"
                " (sequences must be consecutive)"
            )
        payload = frame.payload
        assembly = self._assembly
        if assembly is None:
            if not frame.more:  # the common case: a whole message in one frame
                if len(payload) > self.max_message:
                    raise self._too_big(frame.seq)
                self.expected_seq += 1
                return payload
            assembly = self._assembly = bytearray()
        if frame.more and not payload:
            raise RemoteProtocolError(f"empty chunk with MORE set in message {frame.seq}")
        if len(assembly) + len(payload) > self.max_message:
            raise self._too_big(frame.seq)
        self._parts += 1
        if self._parts > self.max_parts:
            raise RemoteProtocolError(
                f"message {frame.seq} cut into more than {self.max_parts} chunks"
                f" (chunks must carry at least {MIN_CHUNK} bytes)"
            )
        assembly += payload
        if frame.more:
            return None
        self.expected_seq += 1
        self._assembly = None
        self._parts = 0
        return bytes(assembly)

    def _too_big(self, seq: int) -> MessageTooBig:
        return MessageTooBig(f"message {seq} exceeds max_message ({self.max_message} bytes)")
