"""Fixtures shared by every test folder: a loopback pair, a network-namespace host.

The helper modules beside this file (bad_states, diag_netns) import by their bare
names: pytest puts this folder on sys.path for its conftest.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator

import pytest

from diag_netns import NetnsHost, free_subnet, netns_unavailable, run
from peerwatch.testing.servers import Server, start_redis


@pytest.fixture
def netns_host() -> Iterator[NetnsHost]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    tag = os.urandom(3).hex()
    name, host_if, ns_if = f"pwdiag-{tag}", f"pwd{tag}h", f"pwd{tag}n"
    local_addr, addr = free_subnet()
    host = NetnsHost(name=name, addr=addr, local_addr=local_addr)
    try:
        run("ip", "netns", "add", name)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace: {exc.stderr.strip()}")
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        run("ip", "link", "set", ns_if, "netns", name)
        run("ip", "addr", "add", f"{local_addr}/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        host.exec("ip", "addr", "add", f"{addr}/30", "dev", ns_if)
        host.exec("ip", "link", "set", ns_if, "up")
        host.exec("ip", "link", "set", "lo", "up")
        yield host
    finally:
        host.close()
        # the veth pair dies with the namespace; delete our end too in case the move failed
        subprocess.run(["ip", "link", "del", host_if], check=False, capture_output=True, timeout=10)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback pair (client, server), closed after the test."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname(), timeout=5)
    server, _ = listener.accept()
    listener.close()
    try:
        yield client, server
    finally:
        client.close()
        server.close()


@pytest.fixture
def redis() -> Iterator[Server]:
    """A redis-server of this test's own on loopback (tests may stop or freeze it)."""
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()
