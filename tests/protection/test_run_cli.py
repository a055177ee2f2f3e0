"""``peerwatch run``: an unchanged Python program gets its TCP connections protected."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from protectkit import child_options, expected, run_protected

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux options")

UNPROTECTED = {"keepalive": 0, "user_timeout_ms": 0}


@pytest.mark.parametrize("how", ["create_connection", "connect_ex", "asyncio"])
def test_run_protects_each_outgoing_connection_with_the_guard_budget(loopback_server, how):
    got, stderr = child_options(loopback_server, how, "--timeout", "5", "--include-loopback", "-v")
    assert got == expected(5.0)
    assert "protected connect fd" in stderr and "user timeout 4600 ms" in stderr


def test_run_leaves_loopback_alone_unless_asked(loopback_server):
    got, stderr = child_options(loopback_server, "create_connection", "--timeout", "5", "-vv")
    assert {k: got[k] for k in UNPROTECTED} == UNPROTECTED
    assert "left alone (loopback)" in stderr


def test_idle_limit_makes_the_first_probe_come_before_it(loopback_server):
    got, _ = child_options(
        loopback_server, "create_connection", "--timeout", "60", "--idle-limit", "20",
        "--include-loopback",
    )  # fmt: skip
    assert got["idle"] < 20
    assert got == expected(60.0, idle_limit=20)
    assert got["user_timeout_ms"] == 59600  # the budget itself is unchanged


def test_accepted_connections_are_protected_only_when_asked() -> None:
    server = (
        "import socket, sys; s = socket.create_server(('127.0.0.1', 0)); "
        "c = socket.create_connection(s.getsockname()); a, _ = s.accept(); "
        "print(a.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), "
        "a.getsockopt(socket.IPPROTO_TCP, 18))"
    )
    plain = run_protected("--timeout", "5", "--include-loopback", argv=["-c", server])
    accepted = run_protected(
        "--timeout", "5", "--include-loopback", "--accepted", argv=["-c", server]
    )
    assert plain.stdout.split() == ["0", "0"], plain.stderr
    keepalive, user_timeout = accepted.stdout.split()
    assert keepalive == "1", accepted.stderr
    # connected already: guard takes this socket's own retransmission lead (>= 0.4 s) off
    assert 4000 < int(user_timeout) <= 4600, accepted.stderr


def test_a_program_exits_with_its_own_status_and_children_are_protected_too(loopback_server):
    host, port = loopback_server.getsockname()
    grandchild = (
        "import socket, sys; c = socket.create_connection((sys.argv[1], int(sys.argv[2]))); "
        "sys.exit(c.getsockopt(socket.IPPROTO_TCP, 18) // 100)"
    )
    child = (
        "import subprocess, sys; "
        f"sys.exit(subprocess.run([sys.executable, '-c', {grandchild!r}, '{host}', '{port}'])"
        ".returncode)"
    )
    out = run_protected("--timeout", "5", "--include-loopback", argv=["-c", child])
    assert out.returncode == 46, out.stderr  # 4600 ms // 100: the grandchild was protected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--timeout", "0.2", "--", "true"], "timeout must be at least 1 second"),
        (["--timeout", "nan", "--", "true"], "timeout must be at least 1 second"),
        (["--idle-limit", "1", "--", "true"], "idle_limit must be at least 2 seconds"),
        (["--probes", "0", "--", "true"], "probes must be"),
        (["--timeout", "5"], "no command"),
        (["--timeout", "five", "--", "true"], "invalid float value"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(argv, message):
    out = subprocess.run(
        [sys.executable, "-m", "peerwatch", "run", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_a_missing_command_is_reported_not_raised():
    out = subprocess.run(
        [sys.executable, "-m", "peerwatch", "run", "--", "peerwatch-no-such-command"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 127
    assert out.stderr.strip() == "peerwatch run: command not found: peerwatch-no-such-command"


def test_print_env_gives_what_a_container_sets():
    out = subprocess.run(
        [sys.executable, "-m", "peerwatch", "run", "--print-env", "-t", "5", "--idle-limit", "300"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert lines["PEERWATCH_PROTECT"] == "timeout=5,idle_limit=300"
    assert lines["PYTHONPATH"].endswith(os.path.join("protection", "bootstrap"))
    no_defend = subprocess.run(
        [sys.executable, "-m", "peerwatch", "run", "--print-env", "-t", "5", "--no-defend"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "PEERWATCH_PROTECT=timeout=5,defend=0" in no_defend.stdout.splitlines()


def test_environment_alone_protects_and_a_typo_there_warns_in_one_line(loopback_server):
    from peerwatch.protection.environment import BOOTSTRAP_DIR

    host, port = loopback_server.getsockname()
    code = (
        f"import socket; c = socket.create_connection(({host!r}, {port})); "
        "print(c.getsockopt(socket.IPPROTO_TCP, 18))"
    )
    env = dict(os.environ, PYTHONPATH=BOOTSTRAP_DIR)
    good = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PEERWATCH_PROTECT": "timeout=5,include_loopback=1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert good.stdout.strip() == "4600"
    typo = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PEERWATCH_PROTECT": "timout=5"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert typo.stdout.strip() == "0"  # the program ran, unprotected, and was told so
    assert typo.stderr.splitlines() == [
        "peerwatch: PEERWATCH_PROTECT: unknown key 'timout' (known: accepted, defend, idle_limit, "
        "include_loopback, log, probes, timeout); connections are NOT protected"
    ]


def test_the_bootstrap_runs_the_sitecustomize_it_shadows(tmp_path):
    from peerwatch.protection.environment import BOOTSTRAP_DIR

    (tmp_path / "sitecustomize.py").write_text("import builtins; builtins.OTHER_SITE = 1\n")
    out = subprocess.run(
        [sys.executable, "-c", "import builtins; print(getattr(builtins, 'OTHER_SITE', 0))"],
        env=dict(
            os.environ,
            PYTHONPATH=f"{BOOTSTRAP_DIR}{os.pathsep}{tmp_path}",
            PEERWATCH_PROTECT="timeout=5",
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "1"


def test_the_bootstrap_imports_neither_socket_nor_typing_for_a_program_that_does_not():
    from peerwatch.protection.environment import BOOTSTRAP_DIR

    code = "import sys; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=BOOTSTRAP_DIR, PEERWATCH_PROTECT="timeout=5"),
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(out.stdout.split())
    assert "peerwatch.protection" in loaded  # the bootstrap did run
    assert not loaded & {"socket", "typing", "dataclasses", "logging", "inspect"}
