"""Each middlebox fault does what it says, shown on a plain peerwatch connection.

The harness is proven before anything is built on it: a plain (non-resumable)
client on kang talks through the middlebox to a server on kodos, a fault is
applied, and the verdict the client reaches is the one the fault must cause
(``PLAIN_CLIENT_VERDICT``). After the fault is lifted a new connection works,
so the path is whole again; after a NAT rebinding the server sees the client at
its new address.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from faultkit import INTERVAL, PORT, TIMEOUT, LabPath, lab_path

import peerwatch
from peerwatch import Cause, Connection, Verdict
from peerwatch.lab.drivers.middlebox import ROUTER
from peerwatch.lab.middlefaults import FAULT_KINDS, PLAIN_CLIENT_VERDICT, REBOUND, FaultKind

pytestmark = pytest.mark.netns


class EchoServer:
    """A plain peerwatch echo server on kodos that remembers every connection it served."""

    def __init__(self) -> None:
        self.connections: list[Connection] = []
        self.received: list[bytes] = []
        self.server: peerwatch.Server | None = None

    async def start(self) -> None:
        self.server = await peerwatch.serve(
            self.handle, "0.0.0.0", PORT, interval=INTERVAL, timeout=TIMEOUT
        )

    async def handle(self, conn: Connection) -> None:
        self.connections.append(conn)
        async for message in conn:
            self.received.append(message)
            await conn.send(message)


async def _round_trip(conn: Connection, message: bytes) -> None:
    await conn.send(message)
    assert await asyncio.wait_for(conn.recv(), TIMEOUT) == message


async def _open(address: str) -> Connection:
    conn = await peerwatch.connect(address, PORT, interval=INTERVAL, timeout=TIMEOUT)
    await _round_trip(conn, b"hello")
    return conn


async def _verdict(conn: Connection, within: float) -> tuple[Verdict, float]:
    """The connection's verdict, and the monotonic time it arrived."""
    verdict = await asyncio.wait_for(conn.wait_closed(), within)
    return verdict, time.monotonic()


@pytest.fixture
def lab() -> Iterator[LabPath]:
    yield from lab_path()


@pytest.fixture
def echo(lab: LabPath) -> Iterator[EchoServer]:
    server = EchoServer()
    lab.server.run(server.start(), timeout=10)
    try:
        yield server
    finally:
        if server.server is not None:
            lab.server.run(server.server.shutdown(), timeout=10)


@pytest.mark.slow  # the cable and the partition wait out the heartbeat timeout and more
@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault_gives_a_plain_client_its_verdict_and_the_path_heals(
    lab: LabPath, echo: EchoServer, kind: FaultKind
) -> None:
    address = lab.path.server_address
    conn = lab.client.run(_open(address), timeout=10)
    assert echo.connections[0].peer[0] == ROUTER  # the server sees the NAT, not kang
    began = time.monotonic()
    lab.path.start(kind)
    try:
        # Silence needs the heartbeat timeout; a RST comes with the next segment (a ping
        # within one interval). Both get a generous margin for a loaded machine.
        verdict, at = lab.client.run(_verdict(conn, 2 * TIMEOUT + 2), timeout=3 * TIMEOUT + 5)
    finally:
        if kind == "cable-pull":
            time.sleep(max(0.0, began + 2 * TIMEOUT - time.monotonic()))  # out for 2x timeout
        lab.path.stop(kind)
    assert verdict.cause is PLAIN_CLIENT_VERDICT[kind], verdict.describe()
    if verdict.cause is Cause.SILENT:
        assert TIMEOUT * 0.9 <= at - began <= TIMEOUT * 1.1 + 1.5, verdict.describe()
    else:
        assert at - began <= INTERVAL + 1.5, verdict.describe()
    again = lab.client.run(_open(address), timeout=10)
    expected_source = REBOUND if kind == "nat-rebind" else ROUTER
    assert echo.connections[-1].peer[0] == expected_source
    lab.client.run(again.close(), timeout=5)


def test_rst_reaches_both_ends(lab: LabPath, echo: EchoServer) -> None:
    conn = lab.client.run(_open(lab.path.server_address), timeout=10)
    lab.path.start("rst")
    try:
        client_verdict, _ = lab.client.run(_verdict(conn, TIMEOUT), timeout=TIMEOUT + 5)
        served = echo.connections[0]
        server_verdict, _ = lab.server.run(_verdict(served, TIMEOUT), timeout=TIMEOUT + 5)
    finally:
        lab.path.stop("rst")
    assert client_verdict.cause is Cause.RESET, client_verdict.describe()
    assert server_verdict.cause is Cause.RESET, server_verdict.describe()


def test_partition_is_one_way(lab: LabPath, echo: EchoServer) -> None:
    """kang's messages still reach kodos; nothing of kodos's reaches kang."""
    conn = lab.client.run(_open(lab.path.server_address), timeout=10)
    lab.path.start("partition")
    try:

        async def send_unanswered() -> bytes | None:
            await conn.enqueue(b"across")  # not send(): its acknowledgement cannot come back
            try:
                return await asyncio.wait_for(conn.recv(), INTERVAL * 2)
            except asyncio.TimeoutError:
                return None

        echoed = lab.client.run(send_unanswered(), timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while b"across" not in echo.received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        lab.path.stop("partition")
    assert echoed is None
    assert echo.received == [b"hello", b"across"]
