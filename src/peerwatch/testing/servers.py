"""Real servers from their Debian packages, each in a directory of its own: the one place that
knows how to start PostgreSQL, Redis, nginx, RabbitMQ and NATS.

For tests and benchmarks that prove behaviour against the real thing rather
than a mock, and for the lab's driver scenarios (``peerwatch.lab.drivers``).
By default a server listens on loopback at a free port in a new temporary
directory and ``start_*`` waits until it answers; ``Where`` places it
elsewhere: another address and port, a directory the caller owns, a ``spawn``
hook that starts the command (inside a network namespace, say), and whether to
wait (a caller in another namespace cannot connect from here). Each
``start_*`` returns a ``Server`` whose ``stop()`` ends the process group and
removes the directory: call it in a ``finally``. A missing package or a server
that will not start raises ``ServerUnavailable`` with the reason
(``tools/system-deps.d/drivers.list`` names the packages; ``make test``
installs them as root). Servers that refuse to run as root (PostgreSQL,
RabbitMQ) run as their package's user, through ``setpriv`` so a spawn hook
that needs root (``ip netns exec``) comes first.
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
from collections.abc import Callable
from dataclasses import dataclass, field

HOST = "127.0.0.1"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"

#: Starts a server's command line and returns its process (its own process group).
Spawn = Callable[[list[str]], "subprocess.Popen[bytes]"]


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


def spawn_here(argv: list[str]) -> subprocess.Popen[bytes]:
    """The default spawn: in this namespace, output discarded, in a process group of its own."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: stop() ends its children too
    )
    return proc


@dataclass(frozen=True)
class Where:
    """Where and how a server runs; the defaults suit a test on loopback."""

    host: str = HOST
    port: int | None = None  # None: a free port on loopback
    directory: str | None = None  # None: a new temporary directory, removed by stop()
    spawn: Spawn = spawn_here
    wait: bool = True  # connect from here until it answers (False: the caller waits)


HERE = Where()


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
        if "epmd_port" in self.extra:  # RabbitMQ's own epmd outlives its process group
            epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    [epmd, "-port", self.extra["epmd_port"], "-kill"],
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
        shutil.rmtree(self.directory, ignore_errors=True)


def _server(name: str, at: Where, stop_signal: int = signal.SIGTERM) -> Server:
    directory = at.directory or tempfile.mkdtemp(prefix=f"pw-{name}-")
    return Server(name, at.port or free_port(), directory, host=at.host, stop_signal=stop_signal)


def _launch(server: Server, argv: list[str], at: Where, patience: float) -> Server:
    """Spawn ``argv`` and, if asked, wait until it listens; a server that fails is stopped."""
    server.proc = at.spawn(argv)
    if at.wait:
        try:
            wait_listening(server.port, server.proc, server.name, patience, at.host)
        except ServerUnavailable:
            server.stop()
            raise
    return server


def _missing(program: str, package: str) -> ServerUnavailable:
    return ServerUnavailable(
        f"{program} is not installed (Debian package {package}: tools/system-deps.sh)"
    )


def as_user(names: tuple[str, ...], directory: str) -> list[str]:
    """When root, a ``setpriv`` prefix that runs a command as the first of ``names`` that
    exists, after giving it ``directory``; empty when not root (the server runs as us)."""
    if os.geteuid() != 0:
        return []
    for name in names:
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(name)
            break
    else:
        raise ServerUnavailable(f"running as root and none of the users {names} exists")
    os.chmod(directory, 0o755)
    for root, dirs, files in os.walk(directory):
        for path in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(path, user.pw_uid, user.pw_gid)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]


def start_redis(at: Where = HERE, idle_close: int | None = None) -> Server:
    """``idle_close``: Redis ``timeout``, seconds after which it closes an idle client."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise _missing("redis-server", "redis-server")
    server = _server("redis", at)
    argv = [binary, "--bind", server.host, "--port", str(server.port), "--protected-mode", "no",
            "--save", "", "--appendonly", "no", "--dir", server.directory, "--daemonize", "no",
            "--hz", "50", "--timeout", str(idle_close or 0)]  # fmt: skip
    return _launch(server, argv, at, 15)


def postgres_bin() -> str | None:
    """The newest installed PostgreSQL's bin directory (Debian keeps them versioned)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if found:
        return os.path.dirname(found[-1])
    on_path = shutil.which("postgres")
    return os.path.dirname(on_path) if on_path else None


def start_postgres(at: Where = HERE, idle_close: int | None = None) -> Server:
    """PostgreSQL in a new cluster, trust auth, run as ``postgres`` (or nobody) when root.

    ``idle_close``: ``idle_session_timeout`` in seconds. SIGINT stops it: its
    fast shutdown ends sessions (SIGTERM would wait for clients).
    """
    bindir = postgres_bin()
    if not bindir:
        raise _missing("PostgreSQL", "postgresql")
    server = _server("postgres", at, stop_signal=signal.SIGINT)
    data = os.path.join(server.directory, "data")
    try:
        prefix = as_user(("postgres", "nobody"), server.directory)
        init = subprocess.run(
            [*prefix, os.path.join(bindir, "initdb"), "-D", data, "-A", "trust", "-U", "postgres",
             "--no-sync", "-E", "UTF8", "--locale", "C"],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
    except (ServerUnavailable, OSError, subprocess.SubprocessError):
        server.stop()
        raise
    if init.returncode != 0:
        server.stop()
        raise ServerUnavailable(f"initdb failed: {init.stderr.strip().splitlines()[-1:]}")
    if server.host != HOST:  # initdb trusts loopback only; this server listens on `host` alone
        with open(os.path.join(data, "pg_hba.conf"), "a") as hba:
            hba.write("host all all all trust\n")
    settings = [f"listen_addresses={server.host}", f"unix_socket_directories={server.directory}",
                "fsync=off", "synchronous_commit=off", "full_page_writes=off",
                "max_connections=200", "shared_buffers=16MB"]  # fmt: skip
    if idle_close is not None:
        settings.append(f"idle_session_timeout={idle_close}s")
    argv = [*prefix, os.path.join(bindir, "postgres"), "-D", data, "-p", str(server.port)]
    for setting in settings:
        argv += ["-c", setting]
    _launch(server, argv, at, 60)
    if at.wait:
        try:
            _wait_accepting_queries(server)
        except ServerUnavailable:
            server.stop()
            raise
    server.extra["dsn"] = _dsn(server)
    return server


def _wait_accepting_queries(server: Server) -> None:
    try:
        import psycopg
    except ImportError:
        raise ServerUnavailable("psycopg is needed to use PostgreSQL (extra: drivers)") from None

    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(_dsn(server), connect_timeout=2) as c:
                c.execute("SELECT 1")
                return
        except psycopg.OperationalError:  # "the database system is starting up"
            if time.monotonic() > deadline:
                raise ServerUnavailable("postgres never accepted queries") from None
            time.sleep(0.1)


def _dsn(server: Server) -> str:
    return f"host={server.host} port={server.port} user=postgres dbname=postgres"


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
    keepalive_requests 100000;
    server {{
        listen {host}:{port};
        location / {{ return 200 "ok\\n"; }}{slow}
    }}
}}
"""

#: ``/slow`` is proxied to an upstream that accepts and never answers: a request in flight.
NGINX_SLOW = """
        location /slow {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_read_timeout 3600s;
        }}"""


def start_nginx(
    at: Where = HERE, keepalive_timeout: str = "300ms", slow_upstream: int | None = None
) -> Server:
    """nginx with HTTP keep-alive closing idle connections after ``keepalive_timeout``;
    ``slow_upstream``: a port on its loopback whose server never answers, behind ``/slow``."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if binary is None:
        raise _missing("nginx", "nginx")
    server = _server("nginx", at)
    conf = os.path.join(server.directory, "nginx.conf")
    slow = "" if slow_upstream is None else NGINX_SLOW.format(upstream=slow_upstream)
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=server.directory, host=server.host, port=server.port,
                                  keepalive_timeout=keepalive_timeout, slow=slow))  # fmt: skip
    return _launch(server, [binary, "-c", conf, "-p", server.directory, "-e", "stderr"], at, 15)


def start_rabbitmq(at: Where = HERE) -> Server:
    """RabbitMQ with its own node name, ports and epmd, all under its directory, as the
    ``rabbitmq`` user when root; any user may log in as guest from any address."""
    if not os.path.exists(RABBITMQ_SERVER):
        raise _missing("rabbitmq-server", "rabbitmq-server")
    server = _server("rabbitmq", at)
    epmd_port, dist_port = free_port(), free_port()
    base = server.directory
    with open(os.path.join(base, "rabbitmq.conf"), "w") as conf:
        conf.write(f"listeners.tcp.default = {server.host}:{server.port}\nloopback_users = none\n")
    with open(os.path.join(base, "enabled_plugins"), "w") as plugins:
        plugins.write("[].")
    env = {
        "HOME": base,
        "RABBITMQ_NODENAME": f"pw{server.port}@localhost",
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),  # our own epmd, killed in stop()
        "RABBITMQ_BASE": base,
        "RABBITMQ_MNESIA_BASE": os.path.join(base, "mnesia"),
        "RABBITMQ_LOG_BASE": os.path.join(base, "log"),
        "RABBITMQ_CONFIG_FILE": os.path.join(base, "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(base, "enabled_plugins"),
        "RABBITMQ_PID_FILE": os.path.join(base, "rabbitmq.pid"),
    }
    server.extra["epmd_port"] = str(epmd_port)
    try:
        prefix = as_user(("rabbitmq",), base)
    except ServerUnavailable:
        server.stop()
        raise
    argv = [*prefix, "env", *(f"{k}={v}" for k, v in env.items()), RABBITMQ_SERVER]
    return _launch(server, argv, at, 60)


def start_nats(at: Where = HERE) -> Server:
    binary = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if binary is None:
        raise _missing("nats-server", "nats-server")
    server = _server("nats", at)
    log = os.path.join(server.directory, "nats.log")
    return _launch(server, [binary, "-a", server.host, "-p", str(server.port), "-l", log], at, 15)
