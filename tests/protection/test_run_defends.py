"""Under ``peerwatch run`` a driver that sets its own options after connecting no longer
undoes the budget: py-amqp (kombu) and redis-py's asyncio client against real servers.

Without the defence (the old code, or ``--no-defend``) the socket reads back the driver's
values: py-amqp's 60+10x9 keepalive and 1,000 ms user timeout, redis-py's 30+5x3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from protectkit import expected

from peerwatch.testing.servers import Server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux options")

HERE = Path(__file__).parent
KIT = HERE.parent / "integrations"  # drivers_kit: reads a process's sockets via /proc/self/fd
TIMEOUT = 5.0
PROTECT = ("--timeout", f"{TIMEOUT:g}", "--include-loopback", "-v")
#: What each driver puts on its socket by itself, after connecting.
DRIVER_OWN = {
    "kombu": {"keepalive": 1, "idle": 60, "interval": 10, "count": 9, "user_timeout_ms": 1000},
    "redis-asyncio": {"keepalive": 1, "idle": 30, "interval": 5, "count": 3},
}
CASES = [("kombu", "rabbitmq_server"), ("redis-asyncio", "redis_server")]


def run_child(driver: str, server: Server, *options: str) -> tuple[list[dict[str, int]], str]:
    """The unchanged program under ``peerwatch run OPTIONS``: its sockets' options, and stderr."""
    host, port = server.address
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(KIT), str(HERE)]))
    out = subprocess.run(
        [sys.executable, "-m", "peerwatch", "run", *options, "--",
         sys.executable, str(HERE / "driver_child.py"), driver, host, str(port)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    found: list[dict[str, int]] = json.loads(out.stdout.strip().splitlines()[-1])
    assert found, f"the child has no connection to the server: {out.stderr}"
    return found, out.stderr


def _server_for(driver: str, server_fixture: str, request: pytest.FixtureRequest) -> Server:
    pytest.importorskip("kombu" if driver == "kombu" else "redis")
    server: Server = request.getfixturevalue(server_fixture)
    return server


@pytest.mark.parametrize(("driver", "server_fixture"), CASES)
def test_a_driver_setting_its_own_options_after_connecting_keeps_the_budget(
    driver: str, server_fixture: str, request: pytest.FixtureRequest
) -> None:
    server = _server_for(driver, server_fixture, request)
    found, stderr = run_child(driver, server, *PROTECT)
    assert found == [expected(TIMEOUT)] * len(found), stderr
    assert "defended fd" in stderr  # the log says what the driver asked for and was refused
    own = DRIVER_OWN[driver]
    assert f"TCP_KEEPIDLE {expected(TIMEOUT)['idle']} (the program set {own['idle']})" in stderr


@pytest.mark.parametrize(("driver", "server_fixture"), CASES)
def test_no_defend_lets_the_driver_override_as_before(
    driver: str, server_fixture: str, request: pytest.FixtureRequest
) -> None:
    server = _server_for(driver, server_fixture, request)
    found, stderr = run_child(driver, server, *PROTECT, "--no-defend")
    own = DRIVER_OWN[driver]
    for options in found:
        assert {k: options[k] for k in own} == own, stderr
    assert "defended" not in stderr
