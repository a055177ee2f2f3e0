"""Per-message cost of the sans-IO core alone: no sockets, no event loop.

``python -m bench.tp_core [--messages N] [--size BYTES] [--repeats R]``

A client ``Protocol`` and a server ``Protocol`` are wired back to back in one
process: the client queues messages (``send``), its ``data_to_send`` is fed to
the server (``receive_data``) in reads of at most 64 KiB (what one socket read
holds here), the server's application takes every message (``consumed``) and
its ACKs go back to the client. It prints the nanoseconds per message of each
side's core work, the part a compiled build (``PEERWATCH_COMPILE=1``) can speed
up, and says whether the imported core is compiled, so pure and compiled builds
can be measured side by side (``make bench-compiled``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from peerwatch.core.config import Config
from peerwatch.core.protocol import Protocol, Received

READ = 64 * 1024


def handshake(config: Config) -> tuple[Protocol, Protocol]:
    client = Protocol(config, "client", 0.0, incarnation=1)
    server = Protocol(config, "server", 0.0, incarnation=2)
    client.connection_made(0.0)
    server.connection_made(0.0)
    server.receive_data(b"".join(client.data_to_send()), 0.0)
    client.receive_data(b"".join(server.data_to_send()), 0.0)
    client.events_received()
    server.events_received()
    return client, server


def one_run(messages: int, size: int) -> dict[str, float]:
    """Push ``messages`` through; returns the ns/message of each side's core calls."""
    config = Config(send_queue=1 << 30, recv_queue=1 << 30, send_buffer=1 << 40)
    client, server = handshake(config)
    payload = b"x" * size
    send_ns = recv_ns = 0
    received = 0
    batch = 1024
    clock = time.perf_counter_ns
    for _ in range(messages // batch):
        start = clock()
        send = client.send
        for _ in range(batch):
            send(payload)
        wire = b"".join(client.data_to_send())
        middle = clock()
        for at in range(0, len(wire), READ):
            server.receive_data(wire[at : at + READ], 1.0)
            for event in server.events_received():
                if type(event) is Received:
                    taken = event.messages
                    received += len(taken)
                    server.consumed(sum(map(len, taken)), 1.0, len(taken))
        acks = b"".join(server.data_to_send())
        end = clock()
        client.receive_data(acks, 1.0)
        client.events_received()
        send_ns += middle - start + clock() - end
        recv_ns += end - middle
    if received != messages // batch * batch or client.in_flight:
        raise SystemExit(f"lost messages: {received} received, {client.in_flight} in flight")
    return {"send_ns": send_ns / received, "recv_ns": recv_ns / received}


def compiled() -> bool:
    """True when the core modules are mypyc-built extension modules."""
    from peerwatch.core import decoder

    return not decoder.__file__.endswith(".py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    runs = [one_run(options.messages, options.size) for _ in range(options.repeats)]
    result = {"compiled": compiled(), "size": options.size}
    for key in ("send_ns", "recv_ns"):
        values = [run[key] for run in runs]
        result[key] = {
            "min": min(values),
            "median": statistics.median(values),
            "max": max(values),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
