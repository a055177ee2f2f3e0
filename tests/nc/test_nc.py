"""``peerwatch nc`` against peers it did not write: netcat-openbsd and socat, in both directions,
and the article's puzzles replayed: a half-open connection ending in RST, a vanished peer
noticed by keepalive and TCP_USER_TIMEOUT.

Every process gets its stdin from a file (always readable, ends with EOF) and a
timeout; the fixture kills whatever is still running.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from diag_netns import NetnsHost

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux tools"),
    pytest.mark.timeout(60),
]

PEERWATCH = [sys.executable, "-m", "peerwatch"]
FROM_US = b"from peerwatch nc\n"
FROM_THEM = b"from the other tool\n"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (tools/system-deps.sh installs it)")
    return path


class Procs:
    """Processes started by one test: all killed at the end, whatever happened."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], stdin_data: bytes, name: str) -> subprocess.Popen[bytes]:
        stdin = self.tmp / f"{name}.in"
        stdin.write_bytes(stdin_data)
        with stdin.open("rb") as f:
            proc = subprocess.Popen(argv, stdin=f, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.started.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    stream.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.kill_all()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 5.0) -> None:
    """Until a socket listens on ``port`` (read from /proc/net/tcp: no connection made,
    since the one-shot listeners under test accept only one)."""
    deadline = time.monotonic() + timeout
    needle = f":{port:04X} 00000000:0000 0A"
    while time.monotonic() < deadline:
        if needle in Path("/proc/net/tcp").read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on {port}")


def events_of(stdout: bytes) -> list[dict[str, object]]:
    """With --json, every line on stdout is an event (the peer's bytes are "data" events)."""
    return [json.loads(line) for line in stdout.decode().splitlines()]


def data_of(events: list[dict[str, object]]) -> bytes:
    return b"".join(base64.b64decode(str(e["base64"])) for e in events if e["event"] == "data")


def names(events: list[dict[str, object]]) -> list[object]:
    return [e["event"] for e in events]


def finish(proc: subprocess.Popen[bytes], timeout: float = 10) -> tuple[int, bytes, bytes]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def listening_port(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """Read the 'listen' event of a ``peerwatch nc -l ... 0 --json``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        if event["event"] == "listen":
            return int(str(event["local"]).rsplit(":", 1)[1])
    raise AssertionError("peerwatch nc never said where it listens")


# ---------------------------------------------------------------- interoperability


def other_listener(tool: str, port: int) -> list[str]:
    if tool == "nc":  # -N: shut down the socket after EOF on stdin, so we see its FIN
        return [need("nc"), "-N", "-l", "127.0.0.1", str(port)]
    return [need("socat"), f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", "STDIO"]


def other_client(tool: str, port: int) -> list[str]:
    if tool == "nc":
        return [need("nc"), "-N", "127.0.0.1", str(port)]
    return [need("socat"), "STDIO", f"TCP:127.0.0.1:{port}"]


@pytest.mark.parametrize("tool", ["nc", "socat"])
def test_client_talks_to_a_real_listener(procs: Procs, tool: str) -> None:
    port = free_port()
    server = procs.start(other_listener(tool, port), FROM_THEM, "server")
    wait_listening(port)
    client = procs.start([*PEERWATCH, "nc", "--json", "127.0.0.1", str(port)], FROM_US, "client")
    code, out, err = finish(client)
    events = events_of(out)
    assert code == 0, err.decode()
    assert data_of(events) == FROM_THEM
    assert err == b""  # stdout carries everything
    server_code, server_out, _ = finish(server)
    assert server_out == FROM_US
    assert server_code == 0
    sequence = names(events)
    assert sequence[0] == "connect" and "connected" in sequence
    assert "write" in sequence and "eof" in sequence and sequence[-1] == "close"
    write = next(e for e in events if e["event"] == "write")
    assert write["bytes"] == len(FROM_US)
    assert "says nothing about delivery" in str(write["message"])
    close = events[-1]  # the kernel's counters: SYN and FIN count one byte each
    assert close["bytes_received"] == len(FROM_THEM) + 1  # + their FIN
    assert len(FROM_US) + 1 <= int(close["bytes_acked"]) <= len(FROM_US) + 2  # + SYN (, FIN)


@pytest.mark.parametrize("tool", ["nc", "socat"])
def test_listener_serves_a_real_client(procs: Procs, tool: str) -> None:
    server = procs.start(
        [*PEERWATCH, "nc", "--json", "-l", "-s", "127.0.0.1", "0"], FROM_US, "server"
    )
    port = listening_port(server)
    client = procs.start(other_client(tool, port), FROM_THEM, "client")
    client_code, client_out, client_err = finish(client)
    assert client_code == 0, client_err.decode()
    assert client_out == FROM_US
    code, out, err = finish(server)
    assert code == 0, err.decode()
    assert data_of(events_of(out)) == FROM_THEM
    sequence = names(events_of(out))
    assert sequence.index("accepted") < sequence.index("poll_result") < sequence.index("eof")


def test_text_trace_has_a_timestamp_on_every_line(procs: Procs) -> None:
    port = free_port()
    procs.start(other_listener("socat", port), FROM_THEM, "server")
    wait_listening(port)
    client = procs.start([*PEERWATCH, "nc", "127.0.0.1", str(port)], FROM_US, "client")
    code, _, err = finish(client)
    assert code == 0
    lines = err.decode().splitlines()
    assert len(lines) >= 6
    for line in lines:
        stamp, elapsed, _ = line.split(" ", 2)
        assert stamp.endswith("Z") and "T" in stamp, line
        assert elapsed.startswith("+") and elapsed.endswith("s"), line
    text = "\n".join(lines)
    assert "poll returned: " in text and "POLLIN" in text
    assert "read 0 bytes from socket: end of stream" in text


# ---------------------------------------------------------------- the article's puzzles


def test_half_open_connection_write_succeeds_then_read_says_reset(procs: Procs) -> None:
    """Puzzle 3: the peer closed; we keep the socket (dnc); our write 'succeeds', then RST."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        client = subprocess.Popen(
            [*PEERWATCH, "nc", "--json", "--keep-half-open", "127.0.0.1", str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        procs.started.append(client)
        accepted, _ = listener.accept()
        accepted.close()  # FIN to the client; this side is gone once it gets data (RST)
    assert client.stdout is not None and client.stdin is not None
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + 5
    while not any(e["event"] == "half_open" for e in seen):
        assert time.monotonic() < deadline, seen
        seen.append(json.loads(client.stdout.readline()))
    client.stdin.write(b"are you there?\n")
    client.stdin.flush()
    while not any(e["event"] == "close" for e in seen):  # stdin stays open: no FIN from us
        assert time.monotonic() < deadline, seen
        seen.append(json.loads(client.stdout.readline()))
    code, rest, _ = finish(client)
    events = seen + events_of(rest)
    assert code == 1
    states = [e["new"] for e in events if e["event"] == "tcp_state"]
    assert "CLOSE_WAIT" in states and states[-1] == "CLOSE"
    write = next(e for e in events if e["event"] == "write")
    assert write["bytes"] == 15  # the write succeeded: the kernel took the bytes
    error = next(e for e in events if e["event"] == "error")
    # the peer's RST, as Linux reports it in CLOSE_WAIT (illumos in the article: ECONNRESET);
    # read() keeps returning 0 after the FIN, so nc takes the error with SO_ERROR
    assert error["errno"] == "EPIPE" and error["call"] == "SO_ERROR"
    assert "the peer reset it" in str(error["meaning"])
    polls = [e for e in events if e["event"] == "poll_result"]
    assert any("POLLERR" in p.get("socket", []) for p in polls)  # type: ignore[operator]
    assert names(events).index("write") < names(events).index("error")


def test_a_peer_that_does_not_read_closes_its_window_and_writes_stall(
    procs: Procs, tmp_path: Path
) -> None:
    """The slow-reader case: writes 'succeed' until the buffers fill, then wait for POLLOUT."""
    big = tmp_path / "big.in"
    big.write_bytes(b"x" * 16_000_000)  # more than loopback's largest send buffer (4 MB)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with big.open("rb") as stdin:
            client = subprocess.Popen(
                [*PEERWATCH, "nc", "--json", "127.0.0.1", str(listener.getsockname()[1])],
                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        procs.started.append(client)
        reader, _ = listener.accept()  # and never reads
        with reader:
            assert client.stdout is not None
            seen: list[dict[str, object]] = []
            deadline = time.monotonic() + 10
            while not (
                any(e["event"] == "window" for e in seen)
                and any(e["event"] == "write" and e["pending"] for e in seen)
            ):
                assert time.monotonic() < deadline, names(seen)
                seen.append(json.loads(client.stdout.readline()))
    window = next(e for e in seen if e["event"] == "window")
    assert window["snd_wnd"] == 0 and "not reading" in str(window["message"])
    stalled = next(e for e in seen if e["event"] == "write" and e["pending"])
    assert "POLLOUT" in str(stalled["message"])


def test_connection_refused_says_nothing_listens(procs: Procs) -> None:
    client = procs.start([*PEERWATCH, "nc", "--json", "127.0.0.1", str(free_port())], b"", "c")
    code, out, _ = finish(client)
    assert code == 1
    error = next(e for e in events_of(out) if e["event"] == "error")
    assert error["errno"] == "ECONNREFUSED"
    assert "nothing listens" in str(error["meaning"])


def test_bad_arguments_are_refused(procs: Procs) -> None:
    both = procs.start([*PEERWATCH, "nc", "-l", "127.0.0.1", "80"], b"", "a")
    assert finish(both)[0] == 2
    bad_keepalive = procs.start([*PEERWATCH, "nc", "--keepalive", "5,1", "h", "1"], b"", "b")
    code, _, err = finish(bad_keepalive)
    assert code == 2 and b"IDLE,INTVL,CNT" in err


@pytest.mark.netns
def test_vanished_peer_is_reported_by_keepalive_then_etimedout(
    netns_host: NetnsHost, procs: Procs
) -> None:
    """Puzzle 2, bounded: the host vanishes while idle; keepalive probes go unanswered and
    TCP_USER_TIMEOUT makes the kernel give up in seconds instead of never."""
    netns_host.start_redis()
    client = subprocess.Popen(
        [*PEERWATCH, "nc", "--json", "--keepalive", "1,1,5", "--user-timeout", "2500",
         netns_host.addr, "6379"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    procs.started.append(client)
    assert client.stdout is not None
    seen: list[dict[str, object]] = []
    while not any(e["event"] == "poll" for e in seen):
        seen.append(json.loads(client.stdout.readline()))
    netns_host.blackhole()
    blackholed_at = time.monotonic()
    while not any(e["event"] == "close" for e in seen):  # stdin stays open: idle connection
        assert time.monotonic() < blackholed_at + 10, seen
        seen.append(json.loads(client.stdout.readline()))
    took = time.monotonic() - blackholed_at
    code, rest, _ = finish(client)
    events = seen + events_of(rest)
    options = {e["option"]: e["value"] for e in events if e["event"] == "option"}
    assert options == {"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 1, "TCP_KEEPINTVL": 1,
                       "TCP_KEEPCNT": 5, "TCP_USER_TIMEOUT": 2500}  # fmt: skip
    assert code == 1
    assert any(e["event"] == "probe" and e["kind"] == "keepalive" for e in events), events
    error = next(e for e in events if e["event"] == "error")
    assert error["errno"] == "ETIMEDOUT" and "the kernel gave up" in str(error["meaning"])
    # the user timeout (2.5 s) replaces the 5 probes: given up at the first keepalive
    # firing after 2.5 s of silence, on a 1 s grid; never the 1 + 5 x 1 s of the probes
    assert 2.0 <= took <= 5.0, took

    # connecting to the vanished host: the SYN goes unanswered, -w bounds the wait
    started = time.monotonic()
    again = procs.start([*PEERWATCH, "nc", "--json", "-w", "1", netns_host.addr, "6379"], b"", "w")
    code, out, _ = finish(again)
    assert code == 1
    error = next(e for e in events_of(out) if e["event"] == "error")
    assert error["errno"] == "ETIMEDOUT" and "no answer to our SYN" in str(error["message"])
    assert 0.9 <= time.monotonic() - started < 5
