"""``peerwatch run``: unchanged programs using real drivers get their connections protected.

The child (zero_code_child.py) imports nothing from peerwatch; it uses a
driver against a real server and prints the options the kernel holds on the
sockets it opened. psycopg gets them through libpq's own options (its socket
lives in C), the others through the socket hooks (asyncio included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from drivers_kit import Options, expected

from peerwatch.testing.servers import Server

HERE = Path(__file__).parent
TIMEOUT = 5.0


def run_child(driver: str, server: Server, *options: str) -> tuple[list[Options], str]:
    host, port = server.address
    env = dict(os.environ, PYTHONPATH=str(HERE))
    out = subprocess.run(
        [sys.executable, "-m", "peerwatch", "run", *options, "--",
         sys.executable, str(HERE / "zero_code_child.py"), driver, host, str(port)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [Options(**o) for o in json.loads(out.stdout.strip().splitlines()[-1])], out.stderr


PROTECT = ("--timeout", str(TIMEOUT), "--include-loopback", "-v")
CASES = [
    ("psycopg", "postgres_server"),
    ("psycopg_pool", "postgres_server"),
    ("asyncpg", "postgres_server"),
    ("redis", "redis_server"),
    ("httpx", "nginx_server"),
    ("aiohttp", "nginx_server"),
    ("nats", "nats_server"),
]


@pytest.mark.parametrize(("driver", "server_fixture"), CASES)
def test_an_unchanged_program_gets_every_connection_protected(
    driver: str, server_fixture: str, request: pytest.FixtureRequest
) -> None:
    pytest.importorskip(driver)
    server: Server = request.getfixturevalue(server_fixture)
    found, stderr = run_child(driver, server, *PROTECT)
    assert found, "the child has no connection to the server"
    want = expected(TIMEOUT)
    for options in found:
        assert options.keepalive == 1, (options, stderr)
        assert (options.idle, options.interval, options.count) == (
            want.idle,
            want.interval,
            want.count,
        )
        assert options.user_timeout_ms == want.user_timeout_ms, (options, stderr)
    how = "protected psycopg connection" if driver.startswith("psycopg") else "protected connect"
    assert how in stderr  # the per-connection log line


@pytest.mark.parametrize(("driver", "server_fixture"), [CASES[0], CASES[3]])
def test_loopback_servers_are_left_alone_by_default(
    driver: str, server_fixture: str, request: pytest.FixtureRequest
) -> None:
    pytest.importorskip(driver)
    server: Server = request.getfixturevalue(server_fixture)
    found, _ = run_child(driver, server, "--timeout", str(TIMEOUT))
    assert found and all(o.user_timeout_ms == 0 for o in found)


def test_libpq_options_the_program_set_itself_are_kept(postgres_server: Server) -> None:
    pytest.importorskip("psycopg")
    found, stderr = run_child("psycopg_own", postgres_server, *PROTECT)
    want = expected(TIMEOUT)
    assert [(o.idle, o.user_timeout_ms) for o in found] == [(17, want.user_timeout_ms)]
    assert "the program's own kept: keepalives_idle" in stderr
