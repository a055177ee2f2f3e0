"""The real servers of the driver scenarios, as Debian ships them, started in a lab host.

Each server gets a fresh temporary directory (data, configuration, logs), listens
on the host's lab address, and is started as the unprivileged user its package
created where it refuses to run as root (PostgreSQL, RabbitMQ). Nothing of the
system's own instances (``/etc``, ``/var/lib``) is read or touched. The lab kills
every process in the namespace at teardown; the directory is removed by the
caller (``ServerSet``).

``idle_close`` asks each server to close a connection idle that long, where the
server has such an option (PostgreSQL ``idle_session_timeout``, Redis
``timeout``, nginx ``keepalive_timeout``); RabbitMQ and NATS have none.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peerwatch.lab.hosts import Host, Lab
from peerwatch.lab.netns import LabError

PG_BIN = Path("/usr/lib/postgresql")
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
#: Port of nginx's upstream that accepts and never answers (the slow backend of /slow).
SLOW_UPSTREAM_PORT = 9999

Start = Callable[[Lab, Host, Path, "int | None"], None]


@dataclass(frozen=True)
class Server:
    name: str  # what the report calls it
    driver: str  # the client driver that talks to it (peerwatch.lab.agents.drivers.DRIVERS)
    port: int
    package: str  # the Debian package (tools/system-deps.d/driverlab.list)
    program: str  # a file the package installs: present means installed
    start: Start
    closes_idle: bool  # has a server-side idle timeout

    def installed(self) -> bool:
        return Path(self.program).exists() or shutil.which(self.program) is not None


def _as_user(user: str, workdir: Path) -> list[str]:
    """Prefix that runs a command as ``user`` (setpriv, util-linux) after giving it ``workdir``."""
    entry = pwd.getpwnam(user)
    for path in [workdir, *workdir.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]


def _spawn(lab: Lab, host: Host, argv: list[str], log: Path) -> None:
    with log.open("ab") as stderr:
        lab.spawn(host, argv, stderr=stderr)


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    if not PG_BIN.is_dir():
        return None
    versions = sorted((p for p in PG_BIN.iterdir() if (p / "bin/postgres").exists()), reverse=True)
    return versions[0] / "bin" if versions else None


def _start_postgres(lab: Lab, host: Host, workdir: Path, idle_close: int | None) -> None:
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise LabError("PostgreSQL is not installed: run tools/system-deps.sh (postgresql)")
    data = workdir / "data"
    prefix = _as_user("postgres", workdir)
    init = subprocess.run(
        [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if init.returncode != 0:
        raise LabError(f"initdb failed: {init.stderr.strip()[-300:]}")
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write("host all all 0.0.0.0/0 trust\n")
    settings = [
        f"listen_addresses={host.address}",
        "port=5432",
        f"unix_socket_directories={workdir}",
        "fsync=off",
        "shared_buffers=16MB",
    ]
    if idle_close is not None:
        settings.append(f"idle_session_timeout={idle_close}s")
    argv = [*prefix, str(bin_dir / "postgres"), "-D", str(data)]
    for setting in settings:
        argv += ["-c", setting]
    _spawn(lab, host, argv, workdir / "postgres.log")


def _start_redis(lab: Lab, host: Host, workdir: Path, idle_close: int | None) -> None:
    argv = [
        "redis-server",
        "--bind",
        host.address,
        "--port",
        "6379",
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--timeout",
        str(idle_close or 0),
    ]
    _spawn(lab, host, argv, workdir / "redis.log")


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout {keepalive}s;
    keepalive_requests 100000;
    server {{
        listen {address}:8080;
        location / {{ return 200 "ok\\n"; }}
        location /slow {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""


def _start_nginx(lab: Lab, host: Host, workdir: Path, idle_close: int | None) -> None:
    conf = workdir / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            dir=workdir,
            keepalive=idle_close or 3600,
            address=host.address,
            upstream=SLOW_UPSTREAM_PORT,
        )
    )
    # The slow backend: accepts, reads, never answers (socat runs `sleep` per connection).
    upstream = f"TCP-LISTEN:{SLOW_UPSTREAM_PORT},bind=127.0.0.1,reuseaddr,fork"
    _spawn(lab, host, ["socat", upstream, "SYSTEM:sleep 3600"], workdir / "socat.log")
    _spawn(lab, host, ["nginx", "-c", str(conf), "-p", str(workdir)], workdir / "nginx.log")


def _start_rabbitmq(lab: Lab, host: Host, workdir: Path, idle_close: int | None) -> None:
    (workdir / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = {host.address}:5672\nloopback_users = none\n"
    )
    (workdir / "enabled_plugins").write_text("[].")
    prefix = _as_user("rabbitmq", workdir)
    env = {
        "HOME": workdir,
        "RABBITMQ_NODENAME": "rabbit@localhost",
        "RABBITMQ_BASE": workdir,
        "RABBITMQ_MNESIA_BASE": workdir / "mnesia",
        "RABBITMQ_LOG_BASE": workdir / "log",
        "RABBITMQ_CONFIG_FILE": workdir / "rabbitmq.conf",
        "RABBITMQ_ENABLED_PLUGINS_FILE": workdir / "enabled_plugins",
        "RABBITMQ_PID_FILE": workdir / "rabbitmq.pid",
    }
    argv = [*prefix, "env", *(f"{k}={v}" for k, v in env.items()), RABBITMQ_SERVER]
    _spawn(lab, host, argv, workdir / "rabbitmq.log")


def _start_nats(lab: Lab, host: Host, workdir: Path, idle_close: int | None) -> None:
    argv = ["nats-server", "-a", host.address, "-p", "4222", "-l", str(workdir / "nats.log")]
    _spawn(lab, host, argv, workdir / "nats.stderr")


SERVERS = (
    Server(
        "postgresql",
        "psycopg",
        5432,
        "postgresql",
        "/usr/lib/postgresql",
        _start_postgres,
        True,
    ),
    Server("redis", "redis-py", 6379, "redis-server", "redis-server", _start_redis, True),
    Server("nginx", "requests", 8080, "nginx", "nginx", _start_nginx, True),
    Server("rabbitmq", "pika", 5672, "rabbitmq-server", RABBITMQ_SERVER, _start_rabbitmq, False),
    Server("nats", "nats.py", 4222, "nats-server", "nats-server", _start_nats, False),
)
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
            server.start(lab, host, workdir, idle_close if server.closes_idle else None)

    def log_tail(self, server: Server, size: int = 400) -> str:
        """The end of a server's own logs, for a refusal that says why it did not start."""
        texts = []
        for path in sorted((self.root / server.name).glob("*.log")):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace")[-size:])
        return " | ".join(t.strip() for t in texts if t.strip())

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
