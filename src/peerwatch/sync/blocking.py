"""The blocking calls both sync connections share: each hands one coroutine to the loop thread.

``sync.Connection`` (one TCP connection) and ``sync.ResumableConnection`` (a
session across connections) differ only in what they report; sending,
receiving and closing are the same calls on their asyncio counterparts, so
they live here once.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Generic, TypeVar

from peerwatch.aio.connection import Connection as AioConnection
from peerwatch.aio.handles import Delivery as AioDelivery
from peerwatch.aio.resumable import ResumableConnection as AioResumable
from peerwatch.core.config import Config
from peerwatch.core.verdicts import QUIET_END, Verdict
from peerwatch.errors import ConnectionClosed, PeerDead
from peerwatch.sync.loop import DEFAULT_TIMEOUT, LoopThread, check_timeout

#: The asyncio object a blocking wrapper drives: one connection, or a resumable session.
A = TypeVar("A", AioConnection, AioResumable)


class Delivery:
    """Handle for one enqueued message; ``wait(timeout)`` returns once the peer has it."""

    __slots__ = ("_inner", "_runner")

    def __init__(self, runner: LoopThread, inner: AioDelivery) -> None:
        self._runner = runner
        self._inner = inner

    @property
    def seq(self) -> int:
        return self._inner.seq

    @property
    def acknowledged(self) -> bool:
        return self._inner.acknowledged

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._runner.run(_delivered(self._inner), timeout)


async def _delivered(delivery: AioDelivery) -> None:
    await delivery


class BlockingCalls(Generic[A]):
    """Blocking ``send``/``enqueue``/``drain``/``recv``/``close``/iteration over ``self.aio``.

    Each call is bounded by its ``timeout``; ``TimeoutError`` means only that the
    call's own wait ran out (the loop thread's hand-over rule: a message is
    returned to exactly one caller or stays queued, never dropped).
    """

    def __init__(self, runner: LoopThread, conn: A) -> None:
        self._runner = runner
        self.aio: A = conn  # the underlying asyncio object (read-only use from other threads)

    @property
    def verdict(self) -> Verdict | None:
        return self.aio.verdict

    @property
    def config(self) -> Config:
        return self.aio.config

    @property
    def in_flight(self) -> int:
        return self.aio.in_flight

    def send(self, payload: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Send and return once the peer application received it (or raise)."""
        self._runner.run(self.aio.send(payload), timeout)

    def enqueue(self, payload: bytes, timeout: float = DEFAULT_TIMEOUT) -> Delivery:
        """Queue a message; blocks only while the send queue is full."""
        return Delivery(self._runner, self._runner.run(self.aio.enqueue(payload), timeout))

    def drain(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until everything enqueued so far is acknowledged."""
        self._runner.run(self.aio.drain(), timeout)

    def recv(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Next message; ``TimeoutError`` when none came within ``timeout`` (peer still alive)."""
        return self._runner.run(self.aio.recv(), timeout)

    def close(self, reason: str = "", timeout: float = DEFAULT_TIMEOUT) -> Verdict:
        """Say GOODBYE, close, and return the verdict."""
        return self._runner.run(self.aio.close(reason), timeout)

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> Verdict:
        """Wait for the verdict, whatever ends the connection."""
        return self._runner.run(self.aio.wait_closed(), timeout)

    def messages(self, timeout: float | None = None) -> Iterator[bytes]:
        """Yield messages until the connection ends (quietly for GOODBYE, EOF, LOCAL).

        By default each wait lasts until the next message or the verdict: the
        heartbeats, not a call deadline, decide that a quiet peer is dead, so a
        live idle peer is never dropped. With ``timeout``, a wait longer than
        that raises ``TimeoutError`` (the connection stays open).
        """
        if timeout is not None:
            check_timeout(timeout)
        while True:
            try:
                yield self._runner.run(self.aio.recv(), timeout)
            except (PeerDead, ConnectionClosed) as exc:
                if exc.verdict.cause in QUIET_END:
                    return
                raise

    def __iter__(self) -> Iterator[bytes]:
        return self.messages()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.verdict is None:
            self.close("context exited", timeout=self.config.close_timeout + 5.0)
