"""Connecting: restarts are noticed through HELLO, TLS works, settings travel in HELLO."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest
from peerkit import Peer

import peerwatch

pytestmark = pytest.mark.timeout(60)


async def test_reconnect_learns_whether_the_server_restarted(spawn: type[Peer]) -> None:
    first = spawn("echo").wait_listening()
    port = first.port
    conn = await peerwatch.connect("127.0.0.1", port)
    await conn.close()
    again = await peerwatch.connect("127.0.0.1", port)
    assert not again.peer_restarted  # same process, same incarnation
    incarnation = again.peer_incarnation
    await again.close()
    first.stop()
    second = spawn("echo", "--port", str(port)).wait_listening()  # SO_REUSEADDR: same port
    assert second.port == port
    after = await peerwatch.connect("127.0.0.1", port)
    assert after.peer_restarted
    assert after.peer_incarnation != incarnation
    await after.close()


async def test_hello_carries_each_sides_liveness_settings(spawn: type[Peer]) -> None:
    peer = spawn("echo", "--interval", "0.3", "--timeout", "2.5").wait_listening()
    conn = await peerwatch.connect("127.0.0.1", peer.port, interval=0.2, timeout=1.0)
    assert conn.peer_hello is not None
    assert (conn.peer_hello.interval, conn.peer_hello.timeout) == (0.3, 2.5)
    await conn.close()


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl cannot make a test certificate: {exc}")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    return server_ctx, client_ctx


async def test_tls_connection_with_heartbeats(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls

    async def echo(conn: peerwatch.Connection) -> None:
        async for message in conn:
            await conn.enqueue(message)

    srv = await peerwatch.serve(echo, "127.0.0.1", 0, ssl=server_ctx, interval=0.1, timeout=1.0)
    conn = await peerwatch.connect(
        "127.0.0.1", srv.port, ssl=client_ctx, server_hostname="127.0.0.1", interval=0.1,
        timeout=1.0,
    )  # fmt: skip
    assert conn.transport is not None
    assert conn.transport.get_extra_info("ssl_object") is not None
    await conn.send(b"secret")
    assert await conn.recv() == b"secret"
    await asyncio.sleep(0.5)  # idle: heartbeats keep it alive and measure the RTT
    assert conn.verdict is None and conn.rtt is not None and conn.pings_sent >= 2
    await conn.close()
    await srv.shutdown()
