"""Helpers for the protection tests: run a child under ``peerwatch run``, read its socket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import peerwatch

#: A child program that connects to the server in argv[1] (host:port) the way argv[2] says
#: and prints the options on its socket as JSON: what the program itself would see.
CHILD = r"""
import asyncio, json, socket, sys
host, port = sys.argv[1].rsplit(":", 1)
how = sys.argv[2]

def options(s):
    get = s.getsockopt
    return {"keepalive": get(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "idle": get(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "interval": get(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "count": get(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "user_timeout_ms": get(socket.IPPROTO_TCP, 18)}

if how == "create_connection":
    s = socket.create_connection((host, int(port)))
elif how == "connect_ex":
    s = socket.socket()
    assert s.connect_ex((host, int(port))) == 0
elif how == "asyncio":
    async def main():
        reader, writer = await asyncio.open_connection(host, int(port))
        s = writer.get_extra_info("socket")
        got = options(s)
        writer.close()
        return got
    print(json.dumps(asyncio.run(main())))
    sys.exit(0)
print(json.dumps(options(s)))
"""


def run_protected(
    *options: str, argv: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``peerwatch run OPTIONS -- python ARGV`` with this interpreter, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "peerwatch", "run", *options, "--", sys.executable, *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=env if env is not None else dict(os.environ),
    )


def child_options(server: socket.socket, how: str, *options: str) -> tuple[dict[str, int], str]:
    host, port = server.getsockname()
    out = run_protected(*options, argv=["-c", CHILD, f"{host}:{port}", how])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), out.stderr


def expected(timeout: float, **kwargs: float) -> dict[str, int]:
    """What guard() derives for ``timeout``, on a socket not yet connected."""
    knobs = peerwatch.knobs_for(timeout, **kwargs)  # type: ignore[arg-type]
    from peerwatch.kernel.guarding import FRESH_SOCKET_LEAD

    return {
        "keepalive": 1,
        "idle": knobs.keepalive_idle,
        "interval": knobs.keepalive_interval,
        "count": knobs.keepalive_count,
        "user_timeout_ms": round((timeout - FRESH_SOCKET_LEAD) * 1000),
    }
