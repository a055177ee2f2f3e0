"""The driver client agent: one real driver, one protection, talking to its real server.

``python -m peerwatch.lab.agents.drivers SPEC_JSON``

It connects (retrying while the server still starts), applies its protection,
makes one request so the connection is in use (and, for HTTP, parked in the
pool), says ``ready``, then runs the lab's commands from stdin one at a time:
``slow`` (a request the server takes forever to answer: the request in flight
when the fault comes) and ``quick`` (an ordinary round trip). Every outcome is
a JSON event stamped with CLOCK_MONOTONIC (``peerwatch.lab.agents.kit.report``):
``request``, then ``reply`` or ``error`` with the exception's type and text,
which is exactly what the application would have seen.

Protections:

- ``defaults``: the driver as a program uses it, no timeouts added. Retries are
  off where the driver has them, so the first error on the connection is what
  is measured (a retry would reconnect to a dead host and hide it).
- ``driver``: the driver's own options (keepalive, user timeout, heartbeats)
  set from the same budget ``guard`` uses (``peerwatch.integrations.options``).
- ``guard``: the defaults plus ``peerwatch.guard(sock, timeout)`` on the
  driver's socket, found where the driver keeps it (for some drivers only a
  private attribute: each class's ``socket_of`` says which).
- ``run``: the defaults, unchanged, run under ``peerwatch run`` (the lab starts
  this process that way; nothing here differs).
- ``pool-check``: the driver's pool (psycopg_pool, redis-py's ConnectionPool,
  requests' urllib3 pool) with peerwatch's integration: the budget's options on every connection and
  ``peerwatch.check`` at checkout, so a connection the kernel knows is dead is
  replaced before the application gets it. Only drivers with a pool hook.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from peerwatch.childproc import die_with_parent
from peerwatch.integrations.options import socket_options
from peerwatch.lab.agents.kit import Emit, report
from peerwatch.lab.agents.rawclient import apply_options_report

#: Seconds to keep retrying the first connection while the server starts.
CONNECT_PATIENCE = 60.0
#: What a "slow" request waits for on the server: longer than any lab run.
FOREVER = 3600
#: Seconds between the application's idle-time calls into its driver (DriverClient.idle).
IDLE_STEP = 0.2


class DriverClient:
    """One driver's connection; subclasses know how to connect, ask, and find the socket."""

    own_options = True  # the driver has keepalive / timeout options (the "driver" protection)
    #: ``guard`` on the connection made at start-up also protects the requests measured; False
    #: for pools that open new connections by themselves (guard covers one socket, not a pool).
    guard_covers = True
    #: Connections one request may try before the application sees an error (a driver that
    #: retries on a fresh connection makes the application wait once per attempt).
    attempts = 1
    #: Seconds after which the driver's pool drops an idle connection instead of reusing it
    #: (None: never); a flow it no longer uses cannot be forgotten by a middlebox.
    idle_expiry: float | None = None

    def __init__(self, spec: dict[str, Any], emit: Emit) -> None:
        self.host: str = spec["host"]
        self.port: int = int(spec["port"])
        self.protection: str = spec["protection"]
        self.timeout = float(spec["timeout"])
        self.emit = emit

    def connect(self) -> None:
        raise NotImplementedError

    def quick(self) -> object:
        raise NotImplementedError

    def slow(self) -> object:
        raise NotImplementedError

    def idle(self) -> None:
        """What the application does between requests (most: nothing)."""

    def socket_of(self) -> Any:
        """The driver's connected socket (anything with fileno()), for guard()."""
        raise NotImplementedError


class Postgres(DriverClient):
    """psycopg 3 (libpq): keepalives_* and tcp_user_timeout are libpq connection options."""

    def connect(self) -> None:
        import psycopg

        self.conn = psycopg.connect(**self.options())

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": "postgres",
            "dbname": "postgres",
            "autocommit": True,
            "connect_timeout": 10,
        }
        if self.protection in ("driver", "pool-check"):
            from peerwatch.integrations.psycopg import connect_options

            options.update(connect_options(self.timeout))
        return options

    def quick(self) -> object:
        return self.conn.execute("SELECT 1").fetchone()

    def slow(self) -> object:
        return self.conn.execute(f"SELECT pg_sleep({FOREVER})").fetchone()

    def socket_of(self) -> Any:
        return self.conn.pgconn.socket  # public: the libpq descriptor


def redis_options(client: DriverClient, retry: Any) -> dict[str, Any]:
    """redis-py's options for the lab, sync or asyncio (``retry``: that flavour's Retry class):
    retries off, and the budget's keepalive options under ``driver`` and ``pool-check``."""
    from redis.backoff import NoBackoff

    options: dict[str, Any] = {
        "host": client.host,
        "port": client.port,
        "socket_timeout": None,
        "socket_connect_timeout": 10,
        "retry": retry(NoBackoff(), 0),
    }
    if client.protection in ("driver", "pool-check"):
        from peerwatch.integrations.redis import connection_options

        options.update(connection_options(client.timeout))  # socket_keepalive(_options)
    return options


class Redis(DriverClient):
    """redis-py. ``socket_timeout=None``: what pre-8.1 gave everyone, and what blocking
    commands (BLPOP, XREAD BLOCK, pub/sub) need; 8.1's default of 5 s would fail them."""

    def connect(self) -> None:
        import redis
        from redis.retry import Retry

        self.client = redis.Redis(**redis_options(self, Retry), single_connection_client=True)

    def quick(self) -> object:
        return self.client.ping()

    def slow(self) -> object:
        return self.client.blpop(["peerwatch-lab-never"], 0)

    def socket_of(self) -> Any:
        connection = self.client.connection
        assert connection is not None
        return connection._sock  # private: redis-py does not expose the socket


class Http(DriverClient):
    """requests (urllib3 pool) against nginx with HTTP keep-alive; ``/slow`` is proxied to an
    upstream that never answers. urllib3's ``socket_options`` is its own knob."""

    def connect(self) -> None:
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.connection import HTTPConnection

        self.base = f"http://{self.host}:{self.port}"
        self.session = requests.Session()
        if self.protection == "driver":
            options = [*HTTPConnection.default_socket_options, *socket_options(self.timeout)]

            class Adapter(HTTPAdapter):
                def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
                    kwargs["socket_options"] = options
                    super().init_poolmanager(*args, **kwargs)

            self.session.mount("http://", Adapter())

    def _get(self, path: str) -> object:
        response = self.session.get(self.base + path)
        response.raise_for_status()
        return response.status_code

    def quick(self) -> object:
        return self._get("/")

    def slow(self) -> object:
        return self._get("/slow")

    def socket_of(self) -> Any:
        # private: the idle connection parked in one of the pool manager's pools
        pools = self.session.get_adapter(self.base).poolmanager.pools  # type: ignore[attr-defined]
        for key in pools.keys():  # noqa: SIM118 (the container refuses iteration)
            for conn in pools[key].pool.queue:
                if conn is not None and conn.sock is not None:
                    return conn.sock
        raise RuntimeError("no pooled HTTP connection to guard")


class Amqp(DriverClient):
    """pika against RabbitMQ: ``heartbeat`` and ``tcp_options`` are its own knobs. A consumer
    waiting for a message is the request in flight (the broker owes it the next message)."""

    def connect(self) -> None:
        import pika

        options: dict[str, Any] = {}
        if self.protection == "driver":
            from peerwatch.integrations.pika import tcp_options

            options = {
                "heartbeat": max(1, round(self.timeout / 2)),
                "tcp_options": tcp_options(self.timeout),
            }
        params = pika.ConnectionParameters(
            host=self.host, port=self.port, connection_attempts=1, socket_timeout=10, **options
        )
        self.conn = pika.BlockingConnection(params)
        self.channel = self.conn.channel()
        self.queue = self.channel.queue_declare(queue="", exclusive=True).method.queue

    def quick(self) -> object:
        self.channel.queue_declare(queue=self.queue, passive=True)
        return "declare-ok"

    def idle(self) -> None:
        # A BlockingConnection sends heartbeats only while the application pumps events,
        # as a consumer's start_consuming() does; an idle program that does not is closed
        # by RabbitMQ for missed heartbeats (measured: 3 x 2 s after the last pump).
        self.conn.process_data_events(time_limit=0)

    def slow(self) -> object:
        got: list[bytes] = []
        self.channel.basic_consume(self.queue, lambda ch, m, p, body: got.append(body))
        while not got:
            self.conn.process_data_events(time_limit=None)
        return got[0]

    def socket_of(self) -> Any:
        return self.conn._impl._transport._sock  # private: pika does not expose the socket


class AsyncClient(DriverClient):
    """An asyncio driver, on an event loop in a thread of its own; the driver thread waits
    for each coroutine as a synchronous program would wait for its call."""

    def connect(self) -> None:
        if not hasattr(self, "loop"):  # a retried connect reuses the loop
            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, name="loop", daemon=True).start()
        self._run(self._connect())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _connect(self) -> None:
        raise NotImplementedError


class Nats(AsyncClient):
    """nats.py (asyncio, reconnects by itself): ``ping_interval``/``max_outstanding_pings``
    are its knobs; the error the application gets is the disconnect callback."""

    async def _connect(self) -> None:
        import nats

        async def disconnected() -> None:
            self.emit("error", kind="disconnected", msg="nats.py disconnected callback")

        async def error(exc: Exception) -> None:
            self.emit("error", kind=type(exc).__name__, msg=str(exc)[:200])

        options: dict[str, Any] = {}
        if self.protection == "driver":
            options = {"ping_interval": 1, "max_outstanding_pings": max(1, round(self.timeout) - 1)}
        self.nc = await nats.connect(
            f"nats://{self.host}:{self.port}",
            connect_timeout=10,
            disconnected_cb=disconnected,
            error_cb=error,
            **options,
        )
        self.sub = await self.nc.subscribe("peerwatch.lab.never")

    def quick(self) -> object:
        self._run(self.nc.flush(timeout=FOREVER))
        return "pong"

    def slow(self) -> object:
        return self._run(self.sub.next_msg(timeout=FOREVER))

    def socket_of(self) -> Any:
        writer = self.nc._transport._io_writer  # type: ignore[union-attr]  # private
        return writer.get_extra_info("socket")


class AsyncPostgres(AsyncClient):
    """asyncpg: no keepalive or user-timeout option of its own (no ``driver`` protection);
    ``guard`` reaches the socket through its asyncio transport (private)."""

    own_options = False

    async def _connect(self) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(
            host=self.host, port=self.port, user="postgres", database="postgres", timeout=10
        )

    def quick(self) -> object:
        return self._run(self.conn.fetchval("SELECT 1"))

    def slow(self) -> object:
        return self._run(self.conn.fetchval(f"SELECT pg_sleep({FOREVER})"))

    def socket_of(self) -> Any:
        return self.conn._transport.get_extra_info("socket")  # private


class AsyncRedis(AsyncClient):
    """redis-py's asyncio client, with the same options and retries off as ``Redis``."""

    async def _connect(self) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry

        options = redis_options(self, Retry)
        self.client = redis.asyncio.Redis(**options, single_connection_client=True)

    def quick(self) -> object:
        return self._run(self.client.ping())

    def slow(self) -> object:
        return self._run(self.client.blpop(["peerwatch-lab-never"], 0))

    def socket_of(self) -> Any:
        connection = self.client.connection
        assert connection is not None
        writer: Any = connection._writer  # private: redis-py does not expose the socket
        return writer.transport.get_extra_info("socket")


class Httpx(DriverClient):
    """httpx against nginx. ``timeout=None``: httpx's default 5 s would end any request
    slower than that (a long poll, a report), so programs that have such requests turn it
    off, as requests' users never had one; ``socket_options`` is its own knob. Its pool
    replaces a connection idle past ``keepalive_expiry`` (5 s) with a new one, so ``guard``
    on the first connection does not reach later requests: use the transport."""

    guard_covers = False
    idle_expiry = 5.0  # httpx's keepalive_expiry

    def connect(self) -> None:
        import httpx

        transport = None
        if self.protection == "driver":
            from peerwatch.integrations.httpx import transport as protected

            transport = protected(self.timeout)
        self.client = httpx.Client(
            base_url=f"http://{self.host}:{self.port}", timeout=None, transport=transport
        )

    def _get(self, path: str) -> object:
        return self.client.get(path).raise_for_status().status_code

    def quick(self) -> object:
        return self._get("/")

    def slow(self) -> object:
        return self._get("/slow")

    def socket_of(self) -> Any:
        for conn in self.client._transport._pool.connections:  # type: ignore[attr-defined]
            stream = conn._connection._network_stream  # private: httpcore's pooled connection
            return stream.get_extra_info("socket")
        raise RuntimeError("no pooled HTTP connection to guard")


class Aiohttp(AsyncClient):
    """aiohttp's ClientSession with its default timeouts (300 s in all, longer than the
    lab's bound); ``socket_factory`` on its connector is its own knob. When a reused
    connection fails, aiohttp retries an idempotent request once on a new connection (no
    public switch), so the application waits two budgets, and ``guard`` on the first
    connection does not reach the second."""

    guard_covers = False
    attempts = 2
    idle_expiry = 15.0  # TCPConnector's keepalive_timeout

    async def _connect(self) -> None:
        import aiohttp

        options: dict[str, Any] = {}
        if self.protection == "driver":
            from peerwatch.integrations.aiohttp import connector

            options = {"connector": connector(self.timeout)}
        self.base = f"http://{self.host}:{self.port}"
        self.session = aiohttp.ClientSession(**options)

    async def _get(self, path: str) -> object:
        async with self.session.get(self.base + path) as response:
            response.raise_for_status()
            await response.read()
            return response.status

    def quick(self) -> object:
        return self._run(self._get("/"))

    def slow(self) -> object:
        return self._run(self._get("/slow"))

    def socket_of(self) -> Any:
        connector: Any = self.session.connector
        for parked in connector._conns.values():  # private: the idle connections
            for protocol, _ in parked:
                return protocol.transport.get_extra_info("socket")
        raise RuntimeError("no pooled HTTP connection to guard")


class Kombu(DriverClient):
    """kombu over py-amqp against RabbitMQ (Celery's stack). py-amqp sets its own socket
    options after connecting; ``transport_options={"socket_settings": ...}`` is the knob
    (peerwatch.integrations.amqp). A consumer waiting for a message is the request in flight."""

    def connect(self) -> None:
        from kombu.connection import Connection

        options: dict[str, Any] = {}
        if self.protection == "driver":
            from peerwatch.integrations.amqp import socket_settings

            options = {"socket_settings": socket_settings(self.timeout)}
        untyped: Any = Connection  # kombu and py-amqp have no type hints
        self.conn = untyped(
            f"amqp://guest:guest@{self.host}:{self.port}//",
            connect_timeout=10,
            transport_options=options,
        )
        self.conn.connect()
        self.channel = self.conn.default_channel
        self.queue = self.channel.queue_declare(queue="", exclusive=True).queue

    def quick(self) -> object:
        self.channel.queue_declare(queue=self.queue, passive=True)
        return "declare-ok"

    def slow(self) -> object:
        got: list[object] = []
        self.channel.basic_consume(self.queue, callback=got.append)
        while not got:
            self.conn.drain_events()
        return "message"

    def socket_of(self) -> Any:
        return self.conn.connection.sock  # py-amqp's Connection.sock


class PostgresPool(Postgres):
    """psycopg_pool with peerwatch's ``check`` callback and libpq options (one connection)."""

    def connect(self) -> None:
        from psycopg_pool import ConnectionPool

        from peerwatch.integrations.psycopg import check

        options = self.options()
        conninfo = f"host={options.pop('host')} port={options.pop('port')}"
        self.pool = ConnectionPool(
            conninfo, kwargs=options, min_size=1, max_size=1, check=check, open=True
        )

    def quick(self) -> object:
        with self.pool.connection() as conn:
            return conn.execute("SELECT 1").fetchone()

    def slow(self) -> object:
        with self.pool.connection() as conn:
            return conn.execute(f"SELECT pg_sleep({FOREVER})").fetchone()

    def socket_of(self) -> Any:
        with self.pool.connection() as conn:
            return conn.pgconn.socket


class RedisPool(Redis):
    """redis-py's pool of ``CheckedConnection`` (peerwatch's integration) and its options."""

    def connect(self) -> None:
        import redis
        from redis.retry import Retry

        from peerwatch.integrations.redis import CheckedConnection

        options = redis_options(self, Retry)
        pool = redis.ConnectionPool(**options, connection_class=CheckedConnection)
        self.client = redis.Redis(connection_pool=pool)

    def socket_of(self) -> Any:
        return self.client.connection_pool._available_connections[0]._sock  # private


class HttpPool(Http):
    """requests with peerwatch's ``ProtectedAdapter``: the budget's socket options on every
    pooled connection and ``peerwatch.check`` when urllib3 hands one out."""

    def connect(self) -> None:
        from peerwatch.integrations.requests import ProtectedAdapter

        super().connect()
        self.session.mount("http://", ProtectedAdapter(self.timeout))


DRIVERS: dict[str, type[DriverClient]] = {
    "psycopg": Postgres,
    "asyncpg": AsyncPostgres,
    "redis-py": Redis,
    "redis-py-asyncio": AsyncRedis,
    "requests": Http,
    "httpx": Httpx,
    "aiohttp": Aiohttp,
    "pika": Amqp,
    "kombu": Kombu,
    "nats.py": Nats,
}
#: The module each driver is imported as (to say which one is missing).
DRIVER_MODULES = {
    "psycopg": "psycopg",
    "asyncpg": "asyncpg",
    "redis-py": "redis",
    "redis-py-asyncio": "redis",
    "requests": "requests",
    "httpx": "httpx",
    "aiohttp": "aiohttp",
    "pika": "pika",
    "kombu": "kombu",
    "nats.py": "nats",
}


#: Drivers whose pool peerwatch's check is wired into (the ``pool-check`` protection).
POOL_CHECKED: dict[str, type[DriverClient]] = {
    "psycopg": PostgresPool,
    "redis-py": RedisPool,
    "requests": HttpPool,
}


def client_class(driver: str, protection: str) -> type[DriverClient] | None:
    """The client for ``driver`` under ``protection``; None where it does not apply."""
    if protection == "pool-check":
        return POOL_CHECKED.get(driver)
    cls = DRIVERS[driver]
    if (protection == "driver" and not cls.own_options) or (
        protection == "guard" and not cls.guard_covers
    ):
        return None
    return cls


def _connect(client: DriverClient) -> None:
    """Connect, retrying while the server is still starting (bounded by CONNECT_PATIENCE)."""
    deadline = time.monotonic() + CONNECT_PATIENCE
    while True:
        try:
            client.connect()
            client.quick()
            return
        except Exception:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.3)


def _serve(client: DriverClient, emit: Emit, commands: queue.Queue[str]) -> None:
    """Run commands one at a time; the driver is used from this thread only (pika needs it)."""
    while True:
        try:
            command = commands.get(timeout=IDLE_STEP)
        except queue.Empty:
            try:
                client.idle()
            except Exception as exc:
                emit("error", kind=type(exc).__name__, msg=str(exc).strip()[:200])
                return
            continue
        action: Callable[[], object] = client.slow if command == "slow" else client.quick
        emit("request", what=command)
        try:
            result = action()
        except Exception as exc:
            emit("error", kind=type(exc).__name__, msg=str(exc).strip()[:200])
        else:
            emit("reply", what=command, result=repr(result)[:60])


def options_of(client: DriverClient) -> dict[str, int] | None:
    """The keepalive and user-timeout options on the driver's socket, read from the kernel:
    what the driver (or its protection) really set, not what its documentation says."""
    try:
        target = client.socket_of()
        fd = target if isinstance(target, int) else target.fileno()
        view = socket.socket(fileno=os.dup(fd))
    except Exception:
        return None
    try:
        return apply_options_report(view)
    finally:
        view.close()


def run_client(spec: dict[str, Any], emit: Emit) -> int:
    cls = client_class(spec["driver"], spec["protection"])
    if cls is None:
        emit("failed", why=f"no {spec['protection']} for {spec['driver']}")
        return 2
    client = cls(spec, emit)
    commands: queue.Queue[str] = queue.Queue()

    def setup() -> None:
        try:
            _connect(client)
            applied = ""
            if client.protection == "guard":
                from peerwatch import guard

                applied = guard(client.socket_of(), client.timeout).describe()
        except Exception as exc:
            emit("failed", why=f"{type(exc).__name__}: {str(exc).strip()[:300]}")
            os._exit(1)
        emit("ready", applied=applied, options=options_of(client))
        _serve(client, emit, commands)

    worker = threading.Thread(target=setup, name="driver", daemon=True)
    worker.start()
    for raw_line in sys.stdin:
        try:
            command = json.loads(raw_line).get("cmd")
        except (ValueError, AttributeError):
            continue
        if command in ("slow", "quick"):
            commands.put(command)
    os._exit(0)  # the lab closed stdin: a driver call may still block, do not wait for it


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m peerwatch.lab.agents.drivers SPEC_JSON", file=sys.stderr)
        return 2
    spec: dict[str, Any] = json.loads(args[0])
    if not die_with_parent(signal.SIGKILL, int(spec.get("parent") or os.getppid())):
        return 1  # the lab died before we asked the kernel to follow it
    return run_client(spec, report)


if __name__ == "__main__":
    raise SystemExit(main())
