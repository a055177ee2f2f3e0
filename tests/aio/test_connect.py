"""Connecting: restarts are noticed through HELLO, TLS works, settings travel in HELLO."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import time
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


# --- every failure to connect is a PeerDead with a fitting cause, chained from the original


def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    """Resolved in a network namespace of its own (no interface up): no DNS query leaves."""
    code = (
        "import asyncio, json, peerwatch\n"
        "async def main():\n"
        "    try:\n"
        "        await peerwatch.connect('peer.invalid', 9)\n"
        "    except peerwatch.PeerDead as dead:\n"
        "        v = dead.verdict\n"
        "        chained = type(dead.__cause__).__name__\n"
        "        print(json.dumps([v.cause.value, v.detail, v.errno, chained]))\n"
        "asyncio.run(main())\n"
    )
    try:
        out = subprocess.run(
            ["unshare", "--net", sys.executable, "-c", code],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except OSError as exc:
        pytest.skip(f"no unshare: {exc}")
    if out.returncode != 0 and "unshare" in out.stderr:
        pytest.skip(f"cannot make a network namespace: {out.stderr.strip()}")
    assert out.stderr == ""
    cause, detail, errno, chained = json.loads(out.stdout)
    assert cause == "UNREACHABLE" and chained == "gaierror" and errno is None
    assert "name resolution failed" in detail and "peer.invalid:9" in detail


async def test_a_host_name_that_is_not_a_name_is_unreachable_not_a_unicode_error() -> None:
    with pytest.raises(peerwatch.PeerDead) as raised:
        await peerwatch.connect("bad..name", 9)
    assert raised.value.verdict.cause is peerwatch.Cause.UNREACHABLE
    assert "not a valid host name" in raised.value.verdict.detail
    assert isinstance(raised.value.__cause__, UnicodeError)


async def _tls_server(ctx: ssl.SSLContext, host: str = "127.0.0.1") -> peerwatch.aio.server.Server:
    async def echo(conn: peerwatch.Connection) -> None:
        async for message in conn:
            await conn.enqueue(message)

    return await peerwatch.serve(echo, host, 0, ssl=ctx, interval=0.2, timeout=1.0)


async def test_an_untrusted_certificate_is_a_tls_verdict_not_eperm(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    srv = await _tls_server(tls[0])
    try:
        with pytest.raises(peerwatch.PeerDead) as raised:
            await peerwatch.connect("127.0.0.1", srv.port, ssl=ssl.create_default_context())
        verdict = raised.value.verdict
        assert verdict.cause is peerwatch.Cause.PROTOCOL
        assert "TLS certificate verification failed" in verdict.detail
        assert verdict.errno is None  # an OpenSSL code is not a POSIX errno
        assert isinstance(raised.value.__cause__, ssl.SSLCertVerificationError)
    finally:
        await srv.shutdown()


async def test_a_failed_tls_handshake_says_so(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = tls
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # no protocol version in common
    srv = await _tls_server(server_ctx)
    try:
        with pytest.raises(peerwatch.PeerDead) as raised:
            await peerwatch.connect("127.0.0.1", srv.port, ssl=client_ctx)
        verdict = raised.value.verdict
        assert verdict.cause is peerwatch.Cause.PROTOCOL and verdict.errno is None
        assert "TLS handshake" in verdict.detail
        # the alert, or the reset of a server that aborts after sending it
        assert isinstance(raised.value.__cause__, (ssl.SSLError, ConnectionResetError))
    finally:
        await srv.shutdown()


async def test_tls_without_server_hostname_checks_the_host_it_connected_to(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """``ssl=ctx`` alone verifies against ``host``, as asyncio does: no bare ValueError."""
    srv = await _tls_server(tls[0])
    try:
        conn = await peerwatch.connect("127.0.0.1", srv.port, ssl=tls[1])  # the cert's IP SAN
        await conn.send(b"over tls")
        assert await conn.recv() == b"over tls"
        await conn.close()
    finally:
        await srv.shutdown()
    other = await _tls_server(tls[0], "127.0.0.2")  # same certificate, another address
    try:
        with pytest.raises(peerwatch.PeerDead) as raised:
            await peerwatch.connect("127.0.0.2", other.port, ssl=tls[1])
        assert "certificate verification failed" in raised.value.verdict.detail
        assert "127.0.0.2" in raised.value.verdict.detail  # OpenSSL: IP address mismatch
    finally:
        await other.shutdown()


async def test_a_peer_that_never_answers_the_tls_handshake_is_hung(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """Its kernel accepted and acknowledged our ClientHello; its application said nothing."""
    with socket.create_server(("127.0.0.1", 0)) as mute:  # listens, never accepts nor reads
        started = time.monotonic()
        with pytest.raises(peerwatch.HandshakeFailed) as raised:
            await peerwatch.connect(
                "127.0.0.1", mute.getsockname()[1], ssl=tls[1], handshake_timeout=0.5
            )
        took = time.monotonic() - started
    verdict = raised.value.verdict
    assert verdict.cause is peerwatch.Cause.HUNG
    assert "no TLS handshake" in verdict.detail
    assert 0.4 <= took < 2.0
