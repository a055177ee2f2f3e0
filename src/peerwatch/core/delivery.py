"""Delivery bookkeeping: sequence numbers, cumulative ACKs, reassembly of chunks.

Pure state: no I/O, no clock. The outbound side remembers every message until
the peer acknowledges it, so a death can hand back exactly what was not
delivered; the inbound side enforces in-order, gap-free sequences and bounds
a reassembled message by ``max_message``.
"""

from __future__ import annotations

from collections import deque

from peerwatch.core.empty import UNUSED
from peerwatch.core.frames import DATA_BODY_HEADER_SIZE, MIN_CHUNK, Data, max_parts
from peerwatch.errors import MessageTooBig, RemoteProtocolError


class Outbound:
    """Messages handed to the connection and not yet acknowledged, in sequence order.

    Only payloads are kept: sequences are consecutive, so the oldest unacknowledged
    message is ``acked_through + 1`` (no (seq, payload) tuple per message, issue 13).
    """

    __slots__ = ("acked_through", "next_seq", "sent_through", "unacked", "unacked_bytes")

    def __init__(self) -> None:
        self.unacked_bytes = 0  # payload bytes held until the peer acknowledges them
        self.next_seq = 1
        self.sent_through = 0  # highest seq whose last byte was handed to the transport
        self.acked_through = 0  # highest seq the peer acknowledged (cumulative)
        # payloads of acked_through + 1, + 2, ...; made by the first assign()
        self.unacked: deque[bytes] = UNUSED

    def assign(self, payload: bytes) -> int:
        seq = self.next_seq
        self.next_seq = seq + 1
        unacked = self.unacked
        if unacked is UNUSED:
            unacked = self.unacked = deque()
        unacked.append(payload)
        self.unacked_bytes += len(payload)
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
        count = seq - self.acked_through
        unacked = self.unacked
        if count == len(unacked):  # everything: the common case of a sender kept waiting
            self.unacked_bytes = 0
            unacked.clear()
        elif count:
            popleft = unacked.popleft
            self.unacked_bytes -= sum(len(popleft()) for _ in range(count))
        self.acked_through = seq
        return count

    def undelivered(self) -> tuple[bytes, ...]:
        return tuple(self.unacked)


class Inbound:
    """Checks DATA sequencing and reassembles chunked messages, bounded by ``max_message``.

    A message in parts is assembled in one ``bytearray``, so it costs its own size
    and not a bytes object per part (2-byte chunks cost 29 x the message as a
    list of parts). Every part counts: an empty chunk with MORE set is refused
    (it would grow the part count for free), and so is a message in more than
    ``max_parts(max_message)`` parts.
    """

    __slots__ = ("_assembly", "_parts", "checks_size", "expected_seq", "max_message", "max_parts")

    def __init__(self, max_message: int, max_frame: int | None = None) -> None:
        """``max_frame``: the largest frame body the decoder lets through; when no
        single-frame message can then exceed ``max_message``, ``on_run`` skips the check."""
        self.max_message = max_message
        self.checks_size = max_frame is None or max_frame - DATA_BODY_HEADER_SIZE > max_message
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

    def on_run(self, first_seq: int, payloads: list[bytes], into: list[bytes]) -> None:
        """Take a ``DataRun`` (whole messages ``first_seq``, ``first_seq + 1``, ...): append
        the messages it completes to ``into``, in order, and every one before a refused one."""
        if self._assembly is not None:  # its first frame ends a message in parts
            last = self.on_data(Data(first_seq, False, payloads[0]))
            assert last is not None
            into.append(last)
            first_seq += 1
            payloads = payloads[1:]
            if not payloads:
                return
        if first_seq != self.expected_seq:
            raise RemoteProtocolError(
                f"DATA with sequence {first_seq}, expected {self.expected_seq}"
                " (sequences must be consecutive)"
            )
        if self.checks_size and max(map(len, payloads)) > self.max_message:
            for seq, payload in enumerate(payloads, first_seq):
                if len(payload) > self.max_message:
                    into += payloads[: seq - first_seq]  # the ones before it were fine
                    self.expected_seq = seq
                    raise self._too_big(seq)
        into += payloads
        self.expected_seq = first_seq + len(payloads)

    def _too_big(self, seq: int) -> MessageTooBig:
        return MessageTooBig(f"message {seq} exceeds max_message ({self.max_message} bytes)")
