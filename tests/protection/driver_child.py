"""A program that knows nothing of peerwatch: a driver that sets its own socket options after
connecting, then the options the kernel holds on its sockets, as JSON.

Run by test_run_defends.py under ``peerwatch run``:
``python driver_child.py DRIVER HOST PORT`` with DRIVER ``kombu`` (py-amqp: keepalive
60+10x9 and a 1,000 ms user timeout, set after connecting) or ``redis-asyncio`` (redis-py
8.1: keepalive 30+5x3, set once asyncio has connected the socket). The sockets are found
through ``/proc/self/fd`` (drivers_kit, from tests/integrations on PYTHONPATH), not
through the driver's private attributes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys

from drivers_kit import sockets_to


def report(address: tuple[str, int]) -> None:
    print(json.dumps([dataclasses.asdict(o) for o in sockets_to(address)]), flush=True)


def use(driver: str, host: str, port: int) -> None:
    if driver == "kombu":
        import kombu

        with kombu.Connection(f"amqp://guest:guest@{host}:{port}//", connect_timeout=10) as conn:
            conn.connect()
            report((host, port))
    elif driver == "redis-asyncio":
        import redis.asyncio

        async def main() -> None:
            client = redis.asyncio.Redis(host=host, port=port)
            await client.ping()
            report((host, port))
            await client.aclose()

        asyncio.run(main())
    else:
        raise SystemExit(f"unknown driver {driver!r}")


if __name__ == "__main__":
    use(sys.argv[1], sys.argv[2], int(sys.argv[3]))
