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


class Redis(DriverClient):
    """redis-py. ``socket_timeout=None``: what pre-8.1 gave everyone, and what blocking
    commands (BLPOP, XREAD BLOCK, pub/sub) need; 8.1's default of 5 s would fail them."""

    def connect(self) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options: dict[str, Any] = {}
        if self.protection == "driver":
            from peerwatch.integrations.redis import connection_options

            options = connection_options(self.timeout)  # socket_keepalive(_options)
        self.client = redis.Redis(
            host=self.host,
            port=self.port,
            socket_timeout=None,
            socket_connect_timeout=10,
            retry=Retry(NoBackoff(), 0),
            single_connection_client=True,
            **options,
        )

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


class Nats(DriverClient):
    """nats.py (asyncio, reconnects by itself): ``ping_interval``/``max_outstanding_pings``
    are its knobs; the error the application gets is the disconnect callback."""

    def connect(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="nats-loop", daemon=True).start()
        self._run(self._connect())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

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
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        from peerwatch.integrations.redis import CheckedConnection, connection_options

        pool = redis.ConnectionPool(
            host=self.host,
            port=self.port,
            socket_timeout=None,
            socket_connect_timeout=10,
            retry=Retry(NoBackoff(), 0),
            connection_class=CheckedConnection,
            **connection_options(self.timeout),
        )
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
    "redis-py": Redis,
    "requests": Http,
    "pika": Amqp,
    "nats.py": Nats,
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
    return DRIVERS[driver]


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
