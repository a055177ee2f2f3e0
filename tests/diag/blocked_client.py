"""A program stuck on a connection, for the remedy tests: ``python blocked_client.py HOST PORT``.

It connects, prints ``connected LOCAL_PORT`` and waits for one line on stdin:
``send`` makes it write a request first (data in flight), ``idle`` does not.
Then it blocks in ``recv`` with no timeout, like a driver waiting for an
answer, and prints how that ended: ``error ERRNO_NAME`` or ``eof`` or
``data``. The test owns the process and kills it in its cleanup.
"""

from __future__ import annotations

import socket
import sys

from peerwatch.core.verdicts import errno_name


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    sock = socket.create_connection((host, port), timeout=5)
    sock.settimeout(None)
    print("connected", sock.getsockname()[1], flush=True)
    if sys.stdin.readline().strip() == "send":
        sock.sendall(b"PING\r\n")
    try:
        data = sock.recv(100)
    except OSError as exc:
        print("error", errno_name(exc), flush=True)
    else:
        print("data" if data else "eof", flush=True)


if __name__ == "__main__":
    main()
