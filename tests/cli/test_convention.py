"""The one CLI convention, tried the way a careless user would: every command, real processes.

Anything a user can type ends in a result or in exactly one line on stderr with
exit status 2, never a traceback and never a different action than asked (``serve
--port 70000`` used to listen on 4464). Missing extras give the same hint
everywhere. ``--json`` is JSON lines on stdout with one time format.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from peerwatch.cli import main

pytestmark = pytest.mark.timeout(120)

PEERWATCH = [sys.executable, "-m", "peerwatch"]
NOWHERE = "nosuchhost.invalid"  # RFC 6761: never resolves

BAD_ARGUMENTS: dict[str, list[str]] = {
    "serve port too large": ["serve", "--port", "70000"],
    "serve port negative": ["serve", "--port", "-1"],
    "serve port not a number": ["serve", "--port", "http"],
    "serve unresolvable host": ["serve", "--host", NOWHERE],
    "serve no workers": ["serve", "--workers", "0"],
    "serve zero interval": ["serve", "--interval", "0"],
    "serve negative timeout": ["serve", "--timeout", "-5"],
    "serve timeout below interval": ["serve", "--interval", "5", "--timeout", "1", "--port", "0"],
    "serve metrics port too large": ["serve", "--metrics-port", "99999"],
    "serve negative drain": ["serve", "--drain", "-1"],
    "ping port too large": ["ping", "127.0.0.1", "99999"],
    "ping port negative": ["ping", "127.0.0.1", "-1"],
    "ping unresolvable host": ["ping", NOWHERE, "9870"],
    "ping missing port": ["ping", "127.0.0.1"],
    "ping negative interval": ["ping", "127.0.0.1", "9870", "-i", "-1"],
    "ping nan interval": ["ping", "127.0.0.1", "9870", "-i", "nan"],
    "ping zero count": ["ping", "127.0.0.1", "9870", "-c", "0"],
    "ping timeout below interval": ["ping", "127.0.0.1", "9870", "-i", "2", "-t", "1"],
    "demo negative interval": ["demo", "--interval", "-1"],
    "demo zero timeout": ["demo", "--timeout", "0"],
    "demo timeout below interval": ["demo", "--interval", "2", "--timeout", "1"],
    "nc port too large": ["nc", "127.0.0.1", "70000"],
    "nc unresolvable host": ["nc", NOWHERE, "80"],
    "nc nothing to do": ["nc"],
    "nc short keepalive": ["nc", "--keepalive", "1,2", "127.0.0.1", "80"],
    "nc negative user timeout": ["nc", "--user-timeout", "-5", "127.0.0.1", "80"],
    "nc zero wait": ["nc", "-w", "0", "127.0.0.1", "80"],
    "inspect port too large": ["inspect", "--port", "70000"],
    "inspect unresolvable peer": ["inspect", "--peer", NOWHERE],
    "inspect peer port too large": ["inspect", "--peer", "10.0.0.1:99999"],
    "inspect unclosed bracket": ["inspect", "--peer", "[::1"],
    "inspect pid not a number": ["inspect", "--pid", "nginx"],
    "inspect zero interval": ["inspect", "--watch", "--interval", "0"],
    "inspect zero count": ["inspect", "--watch", "--count", "0"],
    "inspect unknown state": ["inspect", "--state", "HALF_DEAD"],
    "inspect unknown sort": ["inspect", "--sort", "speed"],
    "inspect negative threshold": ["inspect", "--dead-after", "-1"],
    "inspect yes without destroy": ["inspect", "--yes"],
    "inspect destroy with watch": ["inspect", "--destroy", "--watch"],
    "inspect destroy with idle limit": ["inspect", "--destroy", "--idle-limit", "60"],
    "inspect idle limit below keepalive's 1 s": ["inspect", "--idle-limit", "1"],
    "inspect idle limit not a number": ["inspect", "--idle-limit", "x"],
    "inspect idle limit infinite": ["inspect", "--idle-limit", "inf"],
    "inspect idle limit negative": ["inspect", "--idle-limit", "-5"],
    "guard pid not a number": ["guard", "--pid", "x"],
    "guard pid zero": ["guard", "--pid", "0"],
    "guard no pid": ["guard"],
    "guard negative timeout": ["guard", "--pid", "1", "--timeout", "-1"],
    "guard nan timeout": ["guard", "--pid", "1", "--timeout", "nan"],
    "guard port too large": ["guard", "--pid", "1", "--port", "70000"],
    "guard zero probes": ["guard", "--pid", "1", "--probes", "0"],
    "guard unknown state": ["guard", "--pid", "1", "--state", "HALF_DEAD"],
    "guard bad address": ["guard", "--pid", "1", "--addr", "db.internal"],
    "exporter port too large": ["exporter", "--port", "70000"],
    "exporter port negative": ["exporter", "--port", "-1"],
    "exporter no groups": ["exporter", "--top", "0"],
    "exporter too many groups": ["exporter", "--top", "5000"],
    "exporter threshold not a number": ["exporter", "--dead-after", "x"],
    "exporter unresolvable host": ["exporter", "--host", NOWHERE],
    "lab unknown scenario": ["lab", "--scenario", "meteor"],
    "unknown command": ["frobnicate"],
    "unknown option": ["--frobnicate"],
}


@pytest.fixture(scope="module")
def refusals() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """Every bad command line run at once (each is a short-lived process)."""
    procs = {
        name: subprocess.Popen(
            [*PEERWATCH, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, argv in BAD_ARGUMENTS.items()
    }
    results = {}
    deadline = time.monotonic() + 30
    try:
        for name, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # it took the bad value and ran with it
                proc.kill()
                out, err = proc.communicate()
                err += "(still running after 30 s: killed by the test)"
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        yield results
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_argument_is_one_line_and_exit_two(
    case: str, refusals: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = refusals[case]
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("peerwatch"), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_the_message_names_the_argument_and_the_reason() -> None:
    argv = [*PEERWATCH, "serve", "--port", "70000"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.stderr == (
        "peerwatch serve: argument --port: a port is 0..65535, not 70000"
        " (see peerwatch serve --help)\n"
    )


def test_help_still_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ping", "--help"]) == 0
    assert "usage: peerwatch ping" in capsys.readouterr().out


HIDE = "import sys; sys.modules[{name!r}] = None; from peerwatch.cli import main; " \
    "sys.exit(main(sys.argv[1:]))"  # fmt: skip


def without(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with ``module`` unimportable, as on a host without that extra."""
    return subprocess.run(
        [sys.executable, "-c", HIDE.format(name=module), *argv],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("module", "argv", "extra"),
    [
        ("prometheus_client", ["serve", "--port", "0", "--metrics-port", "0"], "server"),
        ("prometheus_client", ["exporter", "--port", "0"], "server"),
        ("rich", ["lab", "--quick"], "lab"),
        ("pyroute2", ["lab", "--quick"], "lab"),
    ],
)
def test_missing_extra_gives_the_same_hint(module: str, argv: list[str], extra: str) -> None:
    result = without(module, *argv)
    assert result.returncode == 2, result.stderr
    command = argv[0]
    assert result.stderr == (
        f"peerwatch {command}: needs {module}: pip install 'peerwatch[{extra}]'\n"
    )


def test_inspect_needs_no_extra() -> None:
    result = without("rich", "inspect", "--port", "1")
    assert result.returncode == 0, result.stderr
    assert "connections: " in result.stdout


RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_inspect_json_follows_the_convention(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        port = str(listening.getsockname()[1])
        # LISTEN only: a TIME_WAIT of an earlier test may hold the same port number
        assert main(["inspect", "--json", "--state", "LISTEN", "--port", port]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert list(record)[:2] == ["time", "event"]
    assert RFC3339_UTC.match(record["time"]) and record["event"] == "connection"
    assert record["state"] == "LISTEN"
