"""Real servers on loopback, started from their Debian packages in a temporary directory.

Each ``start_*`` returns a ``Server`` whose ``stop()`` kills the process and
removes the directory; the session fixtures in conftest.py call it in a
``finally``. A missing package or a refusal to start becomes a skip with the
reason (tools/system-deps.d/drivers.list installs the packages as root).
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
from dataclasses import dataclass, field

import pytest

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on {HOST}:{port} after {timeout} s")


@dataclass
class Server:
    name: str
    port: int
    directory: str
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


def _spawn(argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: stop() ends its children too
        **kwargs,  # type: ignore[call-overload]
    )


def start_redis() -> Server:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (tools/system-deps.d/drivers.list)")
    server = Server("redis", free_port(), tempfile.mkdtemp(prefix="pw-redis-"))
    server.proc = _spawn(
        [binary, "--bind", HOST, "--port", str(server.port), "--save", "", "--appendonly", "no",
         "--dir", server.directory, "--daemonize", "no", "--hz", "50"]
    )  # fmt: skip
    try:
        wait_listening(server.port, server.proc, "redis-server", 15)
    except RuntimeError as exc:
        server.stop()
        pytest.skip(str(exc))
    return server


def _postgres_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return (
        os.path.dirname(found[-1])
        if found
        else shutil.which("postgres") and os.path.dirname(shutil.which("postgres") or "")
    )


def start_postgres() -> Server:
    """PostgreSQL in a temporary cluster, trust auth on loopback, run as ``postgres`` when root."""
    bindir = _postgres_bin()
    if not bindir:
        pytest.skip("PostgreSQL is not installed (tools/system-deps.d/drivers.list)")
    directory = tempfile.mkdtemp(prefix="pw-pg-")
    user: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # postgres refuses to run as root: use its own account, or nobody
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                user = pwd.getpwnam(name)
                break
        if user is None:
            pytest.skip("running as root and there is no postgres or nobody user")
        os.chmod(directory, 0o755)
        os.chown(directory, user.pw_uid, user.pw_gid)
    data = os.path.join(directory, "data")
    server = Server("postgres", free_port(), directory)

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
        pytest.skip(f"initdb failed: {init.stderr.strip().splitlines()[-1:]}")
    server.proc = _spawn(
        [os.path.join(bindir, "postgres"), "-D", data, "-p", str(server.port),
         "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={directory}",
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
         "-c", "max_connections=200", "-c", "shared_buffers=16MB"],
        preexec_fn=as_owner,
    )  # fmt: skip
    try:
        wait_listening(server.port, server.proc, "postgres", 60)
        _wait_accepting_queries(server)
    except RuntimeError as exc:
        server.stop()
        pytest.skip(str(exc))
    server.extra["dsn"] = f"host={HOST} port={server.port} user=postgres dbname=postgres"
    return server


def _wait_accepting_queries(server: Server) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(
                f"host={HOST} port={server.port} user=postgres dbname=postgres", connect_timeout=2
            ) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError:  # "the database system is starting up"
            if time.monotonic() > deadline:
                raise RuntimeError("postgres never accepted queries") from None
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
        pytest.skip("nginx is not installed (tools/system-deps.d/drivers.list)")
    server = Server("nginx", free_port(), tempfile.mkdtemp(prefix="pw-nginx-"))
    conf = os.path.join(server.directory, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=server.directory, host=HOST, port=server.port,
                                  keepalive_timeout=keepalive_timeout))  # fmt: skip
    server.proc = _spawn([binary, "-c", conf, "-p", server.directory, "-e", "stderr"])
    try:
        wait_listening(server.port, server.proc, "nginx", 15)
    except RuntimeError as exc:
        server.stop()
        pytest.skip(str(exc))
    return server
