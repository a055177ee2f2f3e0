"""A program that knows nothing of peerwatch: it uses one driver, then prints its sockets' options.

Run by test_zero_code.py under ``peerwatch run``: ``python zero_code_child.py DRIVER HOST PORT``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys

from drivers_kit import sockets_to


def use(driver: str, host: str, port: int) -> None:
    if driver == "psycopg":
        import psycopg

        conn = psycopg.connect(host=host, port=port, user="postgres", dbname="postgres")
        conn.execute("SELECT 1")
    elif driver == "psycopg_own":  # the program chose its own keepalive idle time
        import psycopg

        conn = psycopg.connect(
            f"host={host} port={port} user=postgres dbname=postgres keepalives_idle=17"
        )
        conn.execute("SELECT 1")
    elif driver == "psycopg_pool":
        import psycopg_pool

        pool = psycopg_pool.ConnectionPool(
            f"host={host} port={port} user=postgres dbname=postgres", min_size=1, open=True
        )
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    elif driver == "asyncpg":
        import asyncpg

        async def main() -> None:
            conn = await asyncpg.connect(host=host, port=port, user="postgres")
            await conn.fetchval("SELECT 1")
            report()

        asyncio.run(main())
        return
    elif driver == "redis":
        import redis

        client = redis.Redis(host=host, port=port)
        client.ping()
        report()
        return
    elif driver == "httpx":
        import httpx

        with httpx.Client() as http:
            http.get(f"http://{host}:{port}/")
            report()
        return
    elif driver == "aiohttp":
        import aiohttp

        async def main() -> None:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://{host}:{port}/") as response:
                    await response.text()
                report()

        asyncio.run(main())
        return
    elif driver == "nats":
        import nats

        async def main() -> None:
            nc = await nats.connect(f"nats://{host}:{port}")
            await nc.flush()
            report()
            await nc.close()

        asyncio.run(main())
        return
    report()


def report() -> None:
    address = (sys.argv[2], int(sys.argv[3]))
    print(json.dumps([dataclasses.asdict(o) for o in sockets_to(address)]), flush=True)


if __name__ == "__main__":
    use(sys.argv[1], sys.argv[2], int(sys.argv[3]))
