"""Socket-holder child: N loopback TCP sockets (N/2 connected pairs), held until stdin closes.

``python -m bench.socket_holder N`` prints ``ready`` with the listening port and how
many sockets it holds, then waits; ``peerwatch inspect`` and ``ss`` read them from
outside, as they read a busy server's.
"""

from __future__ import annotations

import socket
import sys

from bench.procs import child_setup, emit


def main() -> None:
    count = int(sys.argv[1])
    child_setup(max_seconds=600)
    held: list[socket.socket] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        for _ in range(count // 2):
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
            held += [client, server]
        emit("ready", port=listener.getsockname()[1], sockets=len(held))
        sys.stdin.read()  # until the parent closes our stdin (or dies: PDEATHSIG)
    for sock in held:
        sock.close()


if __name__ == "__main__":
    main()
