"""Processes for the server-limit tests: a server under a low fd limit, and a hog peer.

    python limitproc.py serve aio|sync --nofile N [--no-cap]   (prints PORT n; echo handler)
    python limitproc.py hog --port P --count N --size S         (prints SENT k BLOCKED|CLOSED)

``serve`` lowers its own RLIMIT_NOFILE before the server starts and logs at
WARNING to stderr, as an operator would see it. ``--no-cap`` removes the
server's connection cap so its accept loop meets EMFILE itself. ``hog`` sends
HELLO and then ``N`` messages of ``S`` bytes (in 64 KiB chunks, as a peerwatch
peer does) without ever reading, until the server stops taking them (a send
blocked 1 s: BLOCKED) or ends the connection (CLOSED); then it holds on.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import signal
import socket
import sys
import time

from peerwatch.core.frames import PROTOCOL_VERSION, Hello, encode_data, encode_hello

CHUNK = 64 * 1024


def serve(kind: str, no_cap: bool) -> None:
    if kind == "aio":
        import peerwatch

        async def echo(conn: peerwatch.Connection) -> None:
            async for message in conn:
                await conn.enqueue(message)

        async def main() -> None:
            server = await peerwatch.serve(echo, handshake_timeout=30.0)
            if no_cap:
                server.cap = None
            print("PORT", server.port, flush=True)
            await server.serve_forever()

        asyncio.run(main())
        return
    from peerwatch import sync

    def echo_blocking(conn: sync.Connection) -> None:
        for message in conn:
            conn.send(message, timeout=10)

    srv = sync.serve(echo_blocking, handshake_timeout=30.0)
    if no_cap:
        srv.aio.cap = None
    print("PORT", srv.port, flush=True)
    srv.serve_forever()


def hog(port: int, count: int, size: int) -> None:
    hello = encode_hello(Hello(PROTOCOL_VERSION, 7, 1.0, 60.0, 1 << 20, 1 << 24))
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(1.0)
    sent = 0
    ending = "BLOCKED"
    payload = b"h" * size
    try:
        sock.sendall(hello)
        for seq in range(1, count + 1):
            for at in range(0, size, CHUNK):
                more = at + CHUNK < size
                sock.sendall(encode_data(seq, payload[at : at + CHUNK], more))
            sent += 1
    except TimeoutError:
        pass
    except ConnectionError:
        ending = "CLOSED"
    print("SENT", sent, ending, flush=True)
    time.sleep(3600)  # hold the connection, never read, until killed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["serve", "hog"])
    parser.add_argument("kind", nargs="?", choices=["aio", "sync"], default="aio")
    parser.add_argument("--nofile", type=int, default=0)
    parser.add_argument("--no-cap", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=1 << 20)
    args = parser.parse_args()
    if args.mode == "hog":
        hog(args.port, args.count, args.size)
        return
    if args.nofile:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    log_format = "%(levelname)s %(message)s"
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=log_format)
    serve(args.kind, args.no_cap)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
