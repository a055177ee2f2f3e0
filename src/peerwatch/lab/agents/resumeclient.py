"""The resumable session's client in the lab (issue 12): it keeps talking through the outage.

It sends a numbered message every half heartbeat interval, so messages are in
flight when the fault strikes, and the server echoes each. What the lab is
told, beside the plain clients' events:

* ``lost`` (the underlying connection's verdict: cause, when) and ``resumed``
  (outage, messages replayed), from the session's own events;
* ``check``: ok only when every message sent before the check came back
  exactly once and in order (the echoes are numbered), so "resumed" in the
  report means nothing was lost or repeated, not just that a socket is open;
* ``verdict`` when the session ended (``SESSION_LOST``), with whether every
  message was either acknowledged or handed back in ``undelivered``, never
  both, never neither (``accounted``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from peerwatch.lab.agents.asyncclients import CHECK_TIMEOUT, commands_queue, dial_and_greet
from peerwatch.lab.agents.kit import Emit, watch_stalls

CHECK_PREFIX = b"check:"


def numbered(index: int) -> bytes:
    return b"seq:%06d" % index


class ResumeClient:
    def __init__(self, emit: Emit, conn: Any, interval: float) -> None:
        self.emit = emit
        self.conn = conn
        self.trickle = interval / 2
        self.sent: list[bytes] = []
        self.deliveries: list[Any] = []
        self.echoed = 0  # numbered echoes received in order so far
        self.disorder: list[str] = []  # any echo out of order, missing or repeated
        self.checks: dict[bytes, tuple[int, float]] = {}  # check -> (messages before, sent at)
        self.over = asyncio.Event()
        self.sending = asyncio.Lock()  # the trickle and a ``write`` command take turns

    def on_event(self, event: Any) -> None:
        """Lost / Resumed from the session (called on the event loop)."""
        verdict = getattr(event, "verdict", None)
        if verdict is not None:
            cause = verdict.cause.value + (f" {verdict.errno}" if verdict.errno else "")
            self.emit("lost", at=verdict.detected_at, saw=cause, detail=verdict.describe())
        else:
            self.emit("resumed", at=event.at, outage=event.outage, replayed=event.replayed)

    async def send_next(self) -> None:
        """Enqueue the next numbered message; it counts as sent once the session took it."""
        async with self.sending:
            message = numbered(len(self.sent))
            delivery = await self.conn.enqueue(message)
            self.sent.append(message)
            self.deliveries.append(delivery)

    async def speak(self) -> None:
        import peerwatch

        with contextlib.suppress(peerwatch.PeerDead, peerwatch.ConnectionClosed):
            while not self.over.is_set():
                await self.send_next()
                await asyncio.sleep(self.trickle)

    async def check(self) -> None:
        loop = asyncio.get_running_loop()
        tag = CHECK_PREFIX + b"%d" % len(self.checks)
        self.checks[tag] = (len(self.sent), loop.time())
        await self.conn.enqueue(tag)
        await asyncio.sleep(CHECK_TIMEOUT)
        if tag in self.checks:
            self.checks.pop(tag)
            self.emit("check", ok=False, why="no echo")

    def received(self, message: bytes) -> None:
        if message.startswith(CHECK_PREFIX):
            before, sent_at = self.checks.pop(message, (None, 0.0))
            if before is None:
                return  # came after its check gave up
            ok = not self.disorder and self.echoed >= before
            why = "; ".join(self.disorder) or f"{self.echoed} of {before} echoed"
            rtt = asyncio.get_running_loop().time() - sent_at
            self.emit("check", ok=ok, rtt=rtt, echoed=self.echoed, why="" if ok else why)
            return
        if message != numbered(self.echoed):
            self.disorder.append(f"echo {message!r} where {numbered(self.echoed)!r} was due")
            return
        self.echoed += 1

    async def read(self) -> None:
        import peerwatch

        try:
            async for message in self.conn:
                self.received(bytes(message))
        except peerwatch.PeerDead as dead:
            self.ended(dead.verdict)
        except peerwatch.ConnectionClosed:
            pass
        self.over.set()

    def ended(self, verdict: Any) -> None:
        """SESSION_LOST: every message must be acknowledged or handed back, never both."""
        acked = [m for m, d in zip(self.sent, self.deliveries, strict=True) if d.acknowledged]
        undelivered = [bytes(m) for m in verdict.undelivered if bytes(m).startswith(b"seq:")]
        accounted = acked + undelivered == self.sent
        reason = verdict.detail.split(":", 1)[0].split(" ", 1)[0]
        self.emit(
            "verdict",
            at=verdict.detected_at,
            saw=f"{verdict.cause.value} {reason}",
            detail=verdict.describe(),
            undelivered=len(undelivered),
            acked=len(acked),
            accounted=accounted,
        )

    async def commands(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        tasks: set[asyncio.Task[None]] = set()
        while True:
            name = (await queue.get()).get("cmd")
            if name == "stop":
                return
            if name == "write" and not self.over.is_set():
                try:
                    await self.send_next()
                except Exception as exc:
                    self.emit("write", ok=False, saw=type(exc).__name__)
                else:
                    self.emit("write", ok=True)
            elif name == "check":
                task = asyncio.ensure_future(self.check())
                tasks.add(task)
                task.add_done_callback(tasks.discard)


async def run_resumable(spec: dict[str, Any], emit: Emit) -> int:

    conn = await dial_and_greet(
        spec,
        emit,
        resume=True,
        resume_timeout=spec["resume_timeout"],
        interval=spec["interval"],
        timeout=spec["timeout"],
    )
    if conn is None:
        return 1
    client = ResumeClient(emit, conn, spec["interval"])
    conn.subscribe(client.on_event)
    emit("ready")
    workers = [asyncio.ensure_future(client.read()), asyncio.ensure_future(client.speak())]
    await client.commands(commands_queue(asyncio.get_running_loop()))
    for worker in workers:
        worker.cancel()
        with contextlib.suppress(BaseException):
            await worker
    return 0


def run_resumable_client(spec: dict[str, Any], emit: Emit) -> int:
    async def main() -> int:
        monitor = asyncio.ensure_future(watch_stalls(emit))
        try:
            return await run_resumable(spec, emit)
        finally:
            monitor.cancel()

    return asyncio.run(main())
