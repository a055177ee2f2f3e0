"""The real servers of the driver scenarios, started in a lab host.

How to start each server is known in one place, ``peerwatch.testing.servers``
(also used by the tests and benchmarks); this module only places them: each
listens on the host's lab address at its usual port, in a directory of its own
under the scenario's temporary root, started inside the host's namespace by
``Lab.spawn`` with its output in a log the report can quote. Nothing of the
system's own instances (``/etc``, ``/var/lib``) is read or touched. The lab
kills every process in the namespace at teardown; ``ServerSet`` removes the
directories.

``idle_close`` asks each server to close a connection idle that long, where the
server has such an option (PostgreSQL ``idle_session_timeout``, Redis
``timeout``, nginx ``keepalive_timeout``); RabbitMQ and NATS have none.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peerwatch.lab.hosts import Host, Lab
from peerwatch.lab.netns import LabError
from peerwatch.testing import servers as real

#: Port of nginx's upstream that accepts and never answers (the slow backend of /slow).
SLOW_UPSTREAM_PORT = 9999

#: Starts a server given where it runs (``real.Where``) and its idle-close time, if any.
Start = Callable[[real.Where, "int | None"], real.Server]


@dataclass(frozen=True)
class Server:
    name: str  # what the report calls it
    drivers: tuple[
        str, ...
    ]  # client drivers that talk to it (peerwatch.lab.agents.drivers.DRIVERS)
    port: int
    package: str  # the Debian package (tools/system-deps.d/drivers.list)
    program: str  # a file the package installs: present means installed
    start: Start
    closes_idle: bool  # has a server-side idle timeout

    def installed(self) -> bool:
        return Path(self.program).exists() or shutil.which(self.program) is not None


def _nginx(at: real.Where, idle_close: int | None) -> real.Server:
    # The slow backend: accepts, reads, never answers (socat runs `sleep` per connection).
    upstream = f"TCP-LISTEN:{SLOW_UPSTREAM_PORT},bind=127.0.0.1,reuseaddr,fork"
    at.spawn(["socat", upstream, "SYSTEM:sleep 3600"])
    keepalive = f"{idle_close or 3600}s"
    return real.start_nginx(at, keepalive, slow_upstream=SLOW_UPSTREAM_PORT)


SERVERS = (
    Server("postgresql", ("psycopg", "asyncpg"), 5432, "postgresql", "/usr/lib/postgresql",
           real.start_postgres, True),
    Server("redis", ("redis-py", "redis-py-asyncio"), 6379, "redis-server", "redis-server",
           real.start_redis, True),
    Server("nginx", ("requests", "httpx", "aiohttp"), 8080, "nginx", "nginx", _nginx, True),
    Server("rabbitmq", ("pika", "kombu"), 5672, "rabbitmq-server", real.RABBITMQ_SERVER,
           lambda at, idle: real.start_rabbitmq(at), False),
    Server("nats", ("nats.py",), 4222, "nats-server", "nats-server",
           lambda at, idle: real.start_nats(at), False),
)  # fmt: skip
BY_NAME = {server.name: server for server in SERVERS}


class ServerSet:
    """The servers of one scenario, each in its own temporary directory, removed at the end."""

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        self.root = Path(tempfile.mkdtemp(prefix="pwlab-drivers-"))
        os.chmod(self.root, 0o755)  # the servers' own users must reach their directories

    def start(self, lab: Lab, host: Host, idle_close: int | None) -> None:
        for server in self.servers:
            workdir = self.root / server.name
            workdir.mkdir(mode=0o700)
            log = workdir / f"{server.name}.log"

            def spawn(argv: list[str], log: Path = log) -> subprocess.Popen[bytes]:
                with log.open("ab") as stderr:
                    return lab.spawn(host, argv, stderr=stderr)

            # The clients wait for the server (they retry while it starts): not from here,
            # which is outside the host's namespace.
            at = real.Where(host.address, server.port, str(workdir), spawn, wait=False)
            try:
                server.start(at, idle_close if server.closes_idle else None)
            except real.ServerUnavailable as exc:
                raise LabError(f"{server.name}: {exc}") from exc

    def log_tail(self, server: Server, size: int = 400) -> str:
        """The end of a server's own logs, for a refusal that says why it did not start."""
        texts = []
        for path in sorted((self.root / server.name).rglob("*.log")):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace")[-size:])
        return " | ".join(t.strip() for t in texts if t.strip())

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
