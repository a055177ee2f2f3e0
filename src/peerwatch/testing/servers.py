"""Real servers on loopback, started from their Debian packages in a temporary directory.

For tests and benchmarks that prove behaviour against the real thing
(PostgreSQL, Redis, nginx, RabbitMQ, NATS) rather than a mock. Each
``start_*`` returns a ``Server`` whose ``stop()`` ends the process group and
removes the directory: call it in a ``finally``. A missing package or a
server that will not start raises ``ServerUnavailable`` with the reason
(``tools/system-deps.d/drivers.list`` names the packages; ``make test`` installs
them as root). Only loopback addresses and free ports are used.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"


class ServerUnavailable(RuntimeError):
    """The server is not installed or would not start; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_listening(
    port: int, proc: subprocess.Popen[bytes], what: str, timeout: float, host: str = HOST
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerUnavailable(f"{what} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise ServerUnavailable(f"{what} not listening on {host}:{port} after {timeout} s")


@dataclass
class Server:
    name: str
    port: int
    directory: str
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    host: str = HOST
    stop_signal: int = signal.SIGTERM  # PostgreSQL: SIGINT, its fast shutdown

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, self.stop_signal)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


def _spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    proc: subprocess.Popen[bytes] = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: stop() ends its children too
        **kwargs,
    )
    return proc


def start_redis() -> Server:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerUnavailable("redis-server is not installed (tools/system-deps.d/drivers.list)")
    server = Server("redis", free_port(), tempfile.mkdtemp(prefix="pw-redis-"))
    server.proc = _spawn(
        [binary, "--bind", HOST, "--port", str(server.port), "--save", "", "--appendonly", "no",
         "--dir", server.directory, "--daemonize", "no", "--hz", "50"]
    )  # fmt: skip
    try:
        wait_listening(server.port, server.proc, "redis-server", 15)
    except ServerUnavailable:
        server.stop()
        raise
    return server


def _postgres_bin() -> str | None:
    """The newest installed PostgreSQL's bin directory (Debian keeps them versioned)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if found:
        return os.path.dirname(found[-1])
    on_path = shutil.which("postgres")
    return os.path.dirname(on_path) if on_path else None


def start_postgres(host: str = HOST, port: int | None = None, prefix: Sequence[str] = ()) -> Server:
    """PostgreSQL in a temporary cluster, trust auth, run as ``postgres`` when root.

    ``host``/``port``: where it listens (loopback and a free port by default);
    ``prefix``: a command the server runs under, such as ``ip netns exec NAME``
    for a server in a network namespace.
    """
    bindir = _postgres_bin()
    if not bindir:
        raise ServerUnavailable("PostgreSQL is not installed (tools/system-deps.d/drivers.list)")
    directory = tempfile.mkdtemp(prefix="pw-pg-")
    user: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # postgres refuses to run as root: use its own account, or nobody
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                user = pwd.getpwnam(name)
                break
        if user is None:
            raise ServerUnavailable("running as root and there is no postgres or nobody user")
        os.chmod(directory, 0o755)
        os.chown(directory, user.pw_uid, user.pw_gid)
    data = os.path.join(directory, "data")
    # SIGINT: PostgreSQL's fast shutdown ends sessions (SIGTERM would wait for clients)
    server = Server(
        "postgres", port or free_port(), directory, host=host, stop_signal=signal.SIGINT
    )

    def as_owner() -> None:
        if user is not None:
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

    init = subprocess.run(
        [os.path.join(bindir, "initdb"), "-D", data, "-A", "trust", "-U", "postgres",
         "--no-sync", "-E", "UTF8", "--locale", "C"],
        preexec_fn=as_owner, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    if init.returncode != 0:
        server.stop()
        raise ServerUnavailable(f"initdb failed: {init.stderr.strip().splitlines()[-1:]}")
    if host != HOST:  # initdb trusts loopback only; this server listens on `host` alone
        with open(os.path.join(data, "pg_hba.conf"), "a") as hba:
            hba.write("host all all all trust\n")
    argv = [os.path.join(bindir, "postgres"), "-D", data, "-p", str(server.port),
            "-c", f"listen_addresses={host}", "-c", f"unix_socket_directories={directory}",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200", "-c", "shared_buffers=16MB"]  # fmt: skip
    if prefix and user is not None:  # the prefix (ip netns exec) needs root: drop it after
        drop = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
        server.proc = _spawn([*prefix, *drop, *argv])
    else:
        server.proc = _spawn([*prefix, *argv], preexec_fn=as_owner)
    try:
        wait_listening(server.port, server.proc, "postgres", 60, host)
        _wait_accepting_queries(server)
    except ServerUnavailable:
        server.stop()
        raise
    server.extra["dsn"] = f"host={host} port={server.port} user=postgres dbname=postgres"
    return server


def _wait_accepting_queries(server: Server) -> None:
    try:
        import psycopg
    except ImportError:
        raise ServerUnavailable("psycopg is needed to use PostgreSQL (extra: drivers)") from None

    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(
                f"host={server.host} port={server.port} user=postgres dbname=postgres",
                connect_timeout=2,
            ) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError:  # "the database system is starting up"
            if time.monotonic() > deadline:
                raise ServerUnavailable("postgres never accepted queries") from None
            time.sleep(0.1)


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log error;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout {keepalive_timeout};
    server {{
        listen {host}:{port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def start_nginx(keepalive_timeout: str = "300ms") -> Server:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if binary is None:
        raise ServerUnavailable("nginx is not installed (tools/system-deps.d/drivers.list)")
    server = Server("nginx", free_port(), tempfile.mkdtemp(prefix="pw-nginx-"))
    conf = os.path.join(server.directory, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=server.directory, host=HOST, port=server.port,
                                  keepalive_timeout=keepalive_timeout))  # fmt: skip
    server.proc = _spawn([binary, "-c", conf, "-p", server.directory, "-e", "stderr"])
    try:
        wait_listening(server.port, server.proc, "nginx", 15)
    except ServerUnavailable:
        server.stop()
        raise
    return server


def start_rabbitmq() -> Server:
    """RabbitMQ with its own node name, ports and epmd, all under a temporary directory."""
    script = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    if not os.path.exists(script):
        raise ServerUnavailable(
            "rabbitmq-server is not installed (tools/system-deps.d/drivers.list)"
        )
    server = Server("rabbitmq", free_port(), tempfile.mkdtemp(prefix="pw-rabbitmq-"))
    epmd_port, dist_port = free_port(), free_port()
    env = dict(
        os.environ,
        HOME=server.directory,
        RABBITMQ_NODENAME=f"pw{server.port}@localhost",
        RABBITMQ_NODE_IP_ADDRESS=HOST,
        RABBITMQ_NODE_PORT=str(server.port),
        RABBITMQ_DIST_PORT=str(dist_port),
        ERL_EPMD_PORT=str(epmd_port),  # our own epmd, killed in stop()
        RABBITMQ_MNESIA_BASE=os.path.join(server.directory, "mnesia"),
        RABBITMQ_LOG_BASE=os.path.join(server.directory, "log"),
        RABBITMQ_CONFIG_FILE=os.path.join(server.directory, "rabbitmq"),
        RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(server.directory, "plugins"),
    )
    server.proc = _spawn([script], env=env)
    server.extra["epmd_port"] = str(epmd_port)
    try:
        wait_listening(server.port, server.proc, "rabbitmq-server", 60)
    except ServerUnavailable:
        stop_rabbitmq(server)
        raise
    return server


def stop_rabbitmq(server: Server) -> None:
    server.stop()
    epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [epmd, "-port", server.extra["epmd_port"], "-kill"],
            capture_output=True,
            timeout=10,
            check=False,
        )


def start_nats() -> Server:
    binary = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if binary is None:
        raise ServerUnavailable("nats-server is not installed (tools/system-deps.d/drivers.list)")
    server = Server("nats", free_port(), tempfile.mkdtemp(prefix="pw-nats-"))
    server.proc = _spawn([binary, "-a", HOST, "-p", str(server.port)])
    try:
        wait_listening(server.port, server.proc, "nats-server", 15)
    except ServerUnavailable:
        server.stop()
        raise
    return server
