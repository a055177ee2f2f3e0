"""The raw-socket client: a poll() loop like the article's ``dnc``, one protection at a time.

It waits in poll() on the socket and on its command pipe (stdin), exactly as
nc waits on the socket and the terminal:

* readable socket: ``recv``; ``b""`` is reported and, like dnc, the socket is
  kept open (half-closed) instead of being closed; an errno is reported and
  the socket is dead;
* ``write`` command: send one line, as if the user typed "kodos, are you
  there?"; after an end-of-stream it then reads again for a moment, which is
  where the article saw ECONNRESET;
* ``stream`` command: keep the send buffer full (the slow-reader scenario);
* ``check`` command: send a line and wait for the echo (did the connection survive?).

What differs per strategy is only the socket options (SO_KEEPALIVE,
TCP_KEEPIDLE/INTVL/CNT, TCP_USER_TIMEOUT) and, for read-timeout, the
application giving up when a reply, or progress of a send, takes longer than
the timeout: what ``sock.settimeout(timeout)`` does to a request/response
client.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import time
from typing import Any

from peerwatch.core.verdicts import errno_name
from peerwatch.kernel.knobs import TCP_KEEPCNT, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_USER_TIMEOUT
from peerwatch.kernel.tcpinfo import tcp_info
from peerwatch.lab.agents.kit import Emit

MESSAGE = b"kodos, are you there?\n"
HELLO = b"hello\n"
CHECK = b"check\n"
STREAM_CHUNK = b"x" * 65536
CHECK_TIMEOUT = 3.0
#: After writing to a half-closed socket, read this long for the peer's answer (RST).
RECHECK_FOR = 2.0
RECHECK_STEP = 0.01


def state_of(sock: socket.socket) -> str | None:
    """TCP state from the kernel (TCP_INFO on this very socket), not assumed."""
    info = tcp_info(sock)
    return info.state.name if info is not None else None


def errno_text(exc: OSError) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)) and exc.errno is None:
        return "timeout"
    return errno_name(exc) or type(exc).__name__


def connect(spec: dict[str, Any]) -> socket.socket:
    """Connect, retrying while the server is still starting (bounded: about 5 s)."""
    last: OSError | None = None
    for _ in range(50):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        apply_options(sock, spec)
        sock.settimeout(5.0)
        try:
            sock.connect((spec["host"], spec["port"]))
            return sock
        except OSError as exc:
            last = exc
            sock.close()
            time.sleep(0.1)
    assert last is not None
    raise last


def apply_options(sock: socket.socket, spec: dict[str, Any]) -> dict[str, int]:
    """Set this strategy's socket options before connecting; return what was set."""
    applied: dict[str, int] = {}

    def setopt(name: str, level: int, option: int | None, value: int) -> None:
        if option is None:
            return
        sock.setsockopt(level, option, value)
        applied[name] = value

    setopt("TCP_NODELAY", socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if spec["keepalive"] in ("default", "tuned"):
        setopt("SO_KEEPALIVE", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if spec["keepalive"] == "tuned":
        setopt("TCP_KEEPIDLE", socket.IPPROTO_TCP, TCP_KEEPIDLE, spec["keepalive_idle"])
        setopt("TCP_KEEPINTVL", socket.IPPROTO_TCP, TCP_KEEPINTVL, spec["keepalive_interval"])
        setopt("TCP_KEEPCNT", socket.IPPROTO_TCP, TCP_KEEPCNT, spec["keepalive_count"])
    if spec["user_timeout_ms"]:
        setopt("TCP_USER_TIMEOUT", socket.IPPROTO_TCP, TCP_USER_TIMEOUT, spec["user_timeout_ms"])
    return applied


def handshake(sock: socket.socket) -> None:
    """One echoed line before anything else: the connection works end to end."""
    sock.sendall(HELLO)
    got = b""
    while not got.endswith(HELLO):
        chunk = sock.recv(64)
        if not chunk:
            raise ConnectionError("server closed during hello")
        got += chunk


class RawClient:
    def __init__(self, sock: socket.socket, spec: dict[str, Any], emit: Emit) -> None:
        self.sock = sock
        self.emit = emit
        self.read_timeout = float(spec["read_timeout"])
        self.poller = select.poll()
        self.dead = False  # an error was seen or we gave up: the socket is done
        self.eof = False  # b"" was read: the peer closed its side
        self.streaming = False
        self.last_progress = 0.0
        self.send_blocked_since: float | None = None
        self.awaiting_since: float | None = None  # read-timeout: a reply is due
        self.check_sent_at: float | None = None
        self.recheck_until: float | None = None
        self.tail = b""
        self.stdin_buffer = b""
        self.poller.register(0, select.POLLIN)
        self._update_mask()

    # ----------------------------------------------------------------- loop

    def loop(self) -> None:
        while True:
            events = self.poller.poll(self._poll_timeout_ms())
            for fd, mask in events:
                if fd == 0:
                    if not self._stdin():
                        return
                elif not self.dead:
                    if mask & (select.POLLIN | select.POLLERR | select.POLLHUP):
                        self._readable()
                    if mask & select.POLLOUT and not self.dead:
                        self._writable()
            self._timers(time.monotonic())

    def _update_mask(self) -> None:
        mask = 0
        if not self.dead:
            if not self.eof:
                mask |= select.POLLIN
            if self.streaming:
                mask |= select.POLLOUT
        fd = self.sock.fileno()
        if fd < 0:
            return
        if mask:
            try:
                self.poller.modify(fd, mask)
            except FileNotFoundError:
                self.poller.register(fd, mask)
        else:
            with contextlib.suppress(KeyError, FileNotFoundError):
                self.poller.unregister(fd)

    def _poll_timeout_ms(self) -> int:
        now = time.monotonic()
        deadlines = []
        if self.read_timeout and not self.dead:
            if self.awaiting_since is not None:
                deadlines.append(self.awaiting_since + self.read_timeout)
            if self.send_blocked_since is not None:
                deadlines.append(self.send_blocked_since + self.read_timeout)
        if self.check_sent_at is not None:
            deadlines.append(self.check_sent_at + CHECK_TIMEOUT)
        if self.recheck_until is not None:
            deadlines.append(now + RECHECK_STEP)
        if not deadlines:
            return -1
        return max(0, int((min(deadlines) - now) * 1000) + 1)

    # ------------------------------------------------------------- socket

    def _readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._failed("read", exc)
            return
        if not data:
            self.eof = True
            self.emit("read", saw="b''", state=state_of(self.sock))
            self._update_mask()
            return
        self._received(data)

    def _received(self, data: bytes) -> None:
        self.awaiting_since = None
        self.tail = (self.tail + data)[-64:]
        if self.check_sent_at is not None and CHECK in self.tail:
            self.emit("check", ok=True, rtt=time.monotonic() - self.check_sent_at)
            self.check_sent_at = None
            self.tail = b""

    def _writable(self) -> None:
        try:
            sent = self.sock.send(STREAM_CHUNK)
        except (BlockingIOError, InterruptedError):
            self._send_blocked()
            return
        except OSError as exc:
            self._failed("write", exc)
            return
        if sent:
            # A partial send means the buffer is full again: progress now, and the
            # clock for "no progress" restarts (sendall() with a timeout does the same).
            now = time.monotonic()
            self.last_progress = now
            self.send_blocked_since = now if sent < len(STREAM_CHUNK) else None

    def _send_blocked(self) -> None:
        if self.send_blocked_since is None:
            self.send_blocked_since = time.monotonic()

    def _failed(self, op: str, exc: OSError, via: str = "") -> None:
        extra = {"via": via} if via else {}
        self.emit(op, ok=False, saw=errno_text(exc), state=state_of(self.sock), **extra)
        self.dead = True
        self.recheck_until = None
        self._update_mask()

    def _give_up(self, waited_for: str) -> None:
        """read-timeout fired: the application declares the peer dead and closes."""
        self.emit("timeout", saw="timeout", waited_for=waited_for, state=state_of(self.sock))
        self.dead = True
        self._update_mask()
        self.sock.close()

    # ------------------------------------------------------------- timers

    def _timers(self, now: float) -> None:
        if self.read_timeout and not self.dead:
            if self.awaiting_since is not None and now - self.awaiting_since >= self.read_timeout:
                self._give_up("reply")
            elif (
                self.send_blocked_since is not None
                and now - self.send_blocked_since >= self.read_timeout
            ):
                self._give_up("send progress")
        if self.check_sent_at is not None and now - self.check_sent_at >= CHECK_TIMEOUT:
            self.emit("check", ok=False, why="no echo")
            self.check_sent_at = None
        if self.recheck_until is not None and not self.dead:
            self._recheck(now)

    def _recheck(self, now: float) -> None:
        """Read a half-closed socket after a write: does the peer answer with RST?

        On Linux, once a FIN arrived, read() keeps returning b"" even after an
        RST (the socket is marked done before the error is looked at), so the
        RST is seen the way poll() reports it: POLLERR, then SO_ERROR. An RST in
        CLOSE_WAIT sets EPIPE, not ECONNRESET (net/ipv4/tcp_input.c, tcp_reset);
        the article's illumos host said ECONNRESET.
        """
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError as exc:
            self._failed("read", exc)
            return
        if data:
            self._received(data)
        elif data == b"":
            pending = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if pending:
                self._failed("read", OSError(pending, os.strerror(pending)), via="SO_ERROR")
                return
        if now >= (self.recheck_until or now):
            self.emit("read", saw="b''", state=state_of(self.sock), note="no answer to the write")
            self.recheck_until = None

    # ------------------------------------------------------------- commands

    def _stdin(self) -> bool:
        chunk = os.read(0, 4096)
        if not chunk:
            return False
        self.stdin_buffer += chunk
        while b"\n" in self.stdin_buffer:
            line, self.stdin_buffer = self.stdin_buffer.split(b"\n", 1)
            if not self._command(line.decode().strip()):
                return False
        return True

    def _command(self, line: str) -> bool:
        if not line:
            return True
        cmd = json.loads(line).get("cmd")
        if cmd == "stop":
            return False
        if cmd == "write":
            self._write_message()
        elif cmd == "stream":
            self.streaming = True
            self.last_progress = time.monotonic()
            self._update_mask()
        elif cmd == "check":
            self._check()
        return True

    def _write_message(self) -> None:
        if self.dead:
            self.emit("write", ok=False, saw="already dead")
            return
        try:
            sent = self.sock.send(MESSAGE)
        except (BlockingIOError, InterruptedError):
            self.emit("write", ok=False, saw="EAGAIN")
            return
        except OSError as exc:
            self._failed("write", exc)
            return
        self.emit("write", ok=True, n=sent, state=state_of(self.sock))
        if self.eof:
            self.recheck_until = time.monotonic() + RECHECK_FOR
        else:
            self.awaiting_since = time.monotonic()

    def _check(self) -> None:
        if self.dead or self.eof:
            self.emit("check", ok=False, why="connection already over")
            return
        try:
            self.sock.send(CHECK)
        except (BlockingIOError, InterruptedError):
            self.emit("check", ok=False, why="send buffer full")
            return
        except OSError as exc:
            self._failed("write", exc)
            self.emit("check", ok=False, why=errno_text(exc))
            return
        self.check_sent_at = time.monotonic()


def run_raw_client(spec: dict[str, Any], emit: Emit) -> int:
    try:
        sock = connect(spec)
        handshake(sock)
    except OSError as exc:
        emit("failed", why=f"connect: {exc}")
        return 1
    options = {name: value for name, value in apply_options_report(sock).items()}
    emit("ready", state=state_of(sock), options=options)
    sock.setblocking(False)
    RawClient(sock, spec, emit).loop()
    return 0


def apply_options_report(sock: socket.socket) -> dict[str, int]:
    """Read the options back from the kernel, for the record."""
    report = {"SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}
    for name, option in (
        ("TCP_KEEPIDLE", TCP_KEEPIDLE),
        ("TCP_KEEPINTVL", TCP_KEEPINTVL),
        ("TCP_KEEPCNT", TCP_KEEPCNT),
        ("TCP_USER_TIMEOUT", TCP_USER_TIMEOUT),
    ):
        if option is not None:
            report[name] = sock.getsockopt(socket.IPPROTO_TCP, option)
    return report
