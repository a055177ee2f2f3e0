"""Our part of each verdict in a burst of killed peers: ``eof_received`` to the verdict
callback, Python alone. ``python -m bench.eof_verdict_cost [CONNECTIONS]`` (default 1,000).

``CONNECTIONS`` server ``Connection`` objects, each on a stub transport over a real
loopback socket (the verdict's TCP_INFO snapshot is the kernel's), are handed a client's
HELLO; then each is told of the peer's FIN, as asyncio tells it when a killed peer's
kernel closes its sockets. What is measured is the protocol's verdict and the
connection's telling of it (the snapshot, the ``Verdict``, its callback); not asyncio's
read and close of the socket, which every server pays alike.

Under ``valgrind --tool=callgrind`` the difference of two CONNECTIONS counts, over their
difference, gives instructions per connection, its set-up included (bench/scale_analysis.md).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from typing import Any

from bench.rawclients import peerwatch_hello
from bench.tp_enqueue import SwallowingTransport
from peerwatch.aio.connection import Connection
from peerwatch.aio.sockets import recv_view
from peerwatch.core.config import Config

INTERVAL, TIMEOUT = 10.0, 30.0


class StubTransport(SwallowingTransport):
    """A transport over a real socket that asyncio does not read: writes are dropped,
    closing is remembered, TCP_INFO is the socket's."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default


def run(connections: int) -> dict[str, Any]:
    """Seconds per EOF verdict, the verdicts' causes and the TCP states the first and the last
    verdict's snapshots hold."""
    loop = asyncio.new_event_loop()
    config = Config(interval=INTERVAL, timeout=TIMEOUT)
    hello = peerwatch_hello(INTERVAL, TIMEOUT)
    view = recv_view()
    seen: list[Any] = []
    sockets: list[socket.socket] = []
    conns = []
    with socket.create_server(("127.0.0.1", 0), backlog=connections) as listener:
        for _ in range(connections):
            sockets.append(socket.create_connection(listener.getsockname()))
            server_side, _ = listener.accept()
            sockets.append(server_side)
            conn = Connection(config, "server", loop)
            conn.connection_made(StubTransport(server_side))  # type: ignore[arg-type]
            view[: len(hello)] = hello
            conn.buffer_updated(len(hello))
            conn.add_verdict_callback(lambda _conn, verdict: seen.append(verdict))
            conns.append(conn)
    try:
        start = time.perf_counter()
        for conn in conns:
            conn.eof_received()
        spent = time.perf_counter() - start
        causes = sorted({verdict.cause.value for verdict in seen})
        # the first and the last only: reading a snapshot decodes it, which is what most
        # verdicts are spared (an instruction count of the run would include it)
        ends = (seen[0], seen[-1]) if seen else ()
        states = sorted({v.tcp_info.state.name for v in ends if v.tcp_info is not None})
    finally:
        for sock in sockets:
            sock.close()
        loop.close()
    seconds = spent / connections
    return {"seconds": seconds, "verdicts": len(seen), "causes": causes, "states": states}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.eof_verdict_cost", description=__doc__)
    parser.add_argument("connections", nargs="?", type=int, default=1000)
    options = parser.parse_args(argv)
    if not 1 <= options.connections <= 5000:
        parser.error("connections must be between 1 and 5,000 (two sockets each)")
    result = run(options.connections)
    print(
        f"{result['seconds'] * 1e6:.1f} us per EOF verdict ({result['verdicts']} verdicts,"
        f" causes {', '.join(result['causes'])}; snapshots {', '.join(result['states'])})"
    )


if __name__ == "__main__":
    main()
