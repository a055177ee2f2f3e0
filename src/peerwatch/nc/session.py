"""The netcat itself: one connection, stdin to the socket, the socket to stdout, every step traced.

The loop is the article's: poll() on stdin and the socket, then read or write
whatever poll says is ready, and say what each result means. The socket is
non-blocking, so a write that the kernel takes only in part is shown as such and
the rest waits for POLLOUT; stdin is not read while output is pending, which is
the backpressure nc has too. poll() wakes every ``watch_interval`` seconds even
when nothing happens, to report what the kernel alone sees (state changes,
retransmissions, keepalive probes).

On the peer's FIN (``recv`` returns ``b""``) nc closes and exits; with
``keep_half_open`` it keeps the socket, as dnc did, and then polls it for
errors only: a later write to a peer that forgot the connection is answered
with RST, which poll() reports as POLLERR. Linux keeps returning 0 from read()
after a FIN, so the error is taken with SO_ERROR (EPIPE for an RST received in
CLOSE_WAIT, where the article's illumos said ECONNRESET).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import time
from typing import BinaryIO

from peerwatch.kernel.tcpinfo import TcpInfo, TcpState, tcp_info
from peerwatch.nc.meaning import POLLRDHUP, STATE_MEANING, errno_text, poll_flags
from peerwatch.nc.setup import Done, NcOptions, accept_one, connect, fail
from peerwatch.nc.trace import TcpWatch, Tracer

__all__ = ["NcOptions", "run_nc"]

CHUNK = 16384


def run_nc(
    options: NcOptions,
    tracer: Tracer,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
) -> int:
    """Run one session; returns the exit status (0: closed cleanly, 1: an error)."""
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout.buffer
    try:
        sock = accept_one(options, tracer) if options.listen else connect(options, tracer)
    except Done as done:
        return done.status
    with sock:
        session = _Session(sock, options, tracer, stdin, stdout)
        try:
            return session.run()
        except KeyboardInterrupt:
            tracer.emit("interrupted", "interrupted: closing the socket")
            return 130


class _Session:
    def __init__(
        self,
        sock: socket.socket,
        options: NcOptions,
        tracer: Tracer,
        stdin: BinaryIO,
        stdout: BinaryIO,
    ) -> None:
        self.sock = sock
        self.options = options
        self.tracer = tracer
        self.stdin_fd = stdin.fileno()
        self.stdout = stdout
        self.watch = TcpWatch(tracer)
        self.pending = b""  # read from stdin, not yet taken by the kernel
        self.stdin_open = True
        self.peer_sent_fin = False

    # ------------------------------------------------------------------ main loop

    def run(self) -> int:
        self.sock.setblocking(False)
        info = tcp_info(self.sock)
        if info is not None:
            meaning = STATE_MEANING.get(info.state, "")
            self.tracer.emit("tcp_state", f"TCP state {info.state.name}: {meaning}",
                             new=info.state.name)  # fmt: skip
        self.watch.reset(info)
        poller = select.poll()
        announce = True
        try:
            while True:
                interest = self._register(poller)
                if announce:
                    self.tracer.emit("poll", f"entering poll() on {self._describe(interest)}")
                events = poller.poll(self.options.watch_interval * 1000)
                announce = bool(events)
                if events:
                    self._report(events)
                self.watch.check(self.sock.fileno())
                if events:
                    self._handle(dict(events))
                    self.watch.check(self.sock.fileno())
        except Done as done:
            self._closing(self.watch.check(self.sock.fileno()))
            return done.status

    def _closing(self, info: TcpInfo | None) -> None:
        """The last word: what the kernel says was delivered, and what never left this process."""
        fields: dict[str, object] = {}
        parts = []
        if info is not None and info.bytes_acked is not None:
            fields.update(
                bytes_acked=info.bytes_acked,
                bytes_received=info.bytes_received,
                total_retrans=info.total_retrans,
            )
            parts.append(
                f"kernel counters: {info.bytes_acked} bytes acknowledged by the peer, "
                f"{info.bytes_received} received, {info.total_retrans} retransmissions; "
                "SYN and FIN count one byte each"
            )
        if self.pending:
            fields["unsent"] = len(self.pending)
            parts.append(f"{len(self.pending)} bytes read from stdin were never written")
        detail = f" ({'; '.join(parts)})" if parts else ""
        self.tracer.emit("close", f"closing the socket{detail}", **fields)

    def _register(self, poller: select.poll) -> dict[int, int]:
        interest: dict[int, int] = {}
        for fd in (self.stdin_fd, self.sock.fileno()):
            with contextlib.suppress(KeyError):
                poller.unregister(fd)
        if self.stdin_open and not self.pending:
            interest[self.stdin_fd] = select.POLLIN
        sock_events = 0 if self.peer_sent_fin else select.POLLIN | POLLRDHUP
        if self.pending:
            sock_events |= select.POLLOUT
        interest[self.sock.fileno()] = sock_events  # 0 still reports POLLERR and POLLHUP
        for fd, events in interest.items():
            poller.register(fd, events)
        return interest

    def _describe(self, interest: dict[int, int]) -> str:
        parts = []
        for fd, events in interest.items():
            who = "socket" if fd == self.sock.fileno() else "stdin"
            parts.append(f"{who} for {'|'.join(poll_flags(events)) or 'errors only'}")
        return ", ".join(parts)

    def _report(self, events: list[tuple[int, int]]) -> None:
        fields: dict[str, object] = {}
        parts = []
        for fd, revents in events:
            who = "socket" if fd == self.sock.fileno() else "stdin"
            flags = poll_flags(revents)
            fields[who] = flags
            parts.append(f"{who} {'|'.join(flags)} (0x{revents:x})")
        self.tracer.emit("poll_result", "poll returned: " + ", ".join(parts), **fields)

    def _handle(self, ready: dict[int, int]) -> None:
        sock_revents = ready.get(self.sock.fileno(), 0)
        if sock_revents & select.POLLOUT and self.pending:
            self._write()
        if sock_revents & select.POLLERR:
            self._raise_socket_error()
        if sock_revents & (select.POLLIN | POLLRDHUP | select.POLLHUP):
            self._read_socket()
        if self.stdin_fd in ready and self.stdin_open and not self.pending:
            self._read_stdin()

    # ------------------------------------------------------------------ the socket

    def _raise_socket_error(self, *, final: bool = False) -> None:
        """Fetch the error poll() flagged with POLLERR (SO_ERROR), report it and stop.

        On Linux, read() on a socket that already returned end of stream keeps
        returning 0 even after an RST (the FIN marked the socket done), so the
        pending error is taken with SO_ERROR, where it always is.
        """
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not err:
            if final:
                raise Done(0)
            return
        name, meaning = errno_text(err)
        self.tracer.emit(
            "error",
            f"socket error {name} (getsockopt SO_ERROR): {meaning or os.strerror(err)}",
            call="SO_ERROR",
            errno=name,
            meaning=meaning,
        )
        raise Done(1)

    def _linger(self) -> None:
        """Both sides closed: wait (1 s at most) for the kernel's last word, ACK or RST."""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            info = self.watch.check(self.sock.fileno())
            if info is None or info.state in (TcpState.CLOSE, TcpState.TIME_WAIT):
                break
            time.sleep(0.02)
        self._raise_socket_error(final=True)

    def _read_socket(self) -> None:
        self.tracer.emit("read", "reading from socket")
        try:
            data = self.sock.recv(CHUNK)
        except BlockingIOError:
            self.tracer.emit("read", "nothing to read yet (EAGAIN)", bytes=None)
            return
        except OSError as exc:
            raise fail(self.tracer, "recv", exc, "read from socket") from exc
        if data:
            self.tracer.emit("read", f"read {len(data)} bytes from socket", bytes=len(data))
            self._to_stdout(data)
            return
        if self.peer_sent_fin:  # POLLHUP after end of stream, without an error
            self.tracer.emit("read", "read 0 bytes again: the connection is finished", bytes=0)
            raise Done(0)
        self.peer_sent_fin = True
        self.tracer.emit(
            "eof",
            "read 0 bytes from socket: end of stream, the peer closed its sending side "
            "(FIN); it says nothing about whether the peer still reads",
            bytes=0,
        )
        if not self.options.keep_half_open:
            raise Done(0)
        if not self.stdin_open:
            self.tracer.emit("eof", "stdin is closed too: nothing left to do")
            self._linger()
        self.tracer.emit(
            "half_open",
            "keeping the half-open socket (--keep-half-open): writes still go to the peer",
        )

    def _write(self) -> None:
        total = len(self.pending)
        try:
            sent = self.sock.send(self.pending, getattr(socket, "MSG_NOSIGNAL", 0))
        except BlockingIOError:
            self.tracer.emit("write", f"socket send buffer full (EAGAIN): {total} bytes wait "
                             "for POLLOUT", bytes=0, pending=total)  # fmt: skip
            return
        except OSError as exc:
            raise fail(self.tracer, "send", exc, f"write of {total} bytes to socket") from exc
        self.pending = self.pending[sent:]
        meaning = "copied to the local kernel; that says nothing about delivery"
        if self.pending:
            meaning = f"short write, {len(self.pending)} bytes wait for POLLOUT"
        self.tracer.emit("write", f"wrote {sent} of {total} bytes to socket: {meaning}",
                         bytes=sent, pending=len(self.pending))  # fmt: skip

    # ------------------------------------------------------------------ stdin / stdout

    def _read_stdin(self) -> None:
        try:
            data = os.read(self.stdin_fd, CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            raise fail(self.tracer, "read", exc, "read from stdin") from exc
        if data:
            self.tracer.emit("stdin", f"read {len(data)} bytes from stdin", bytes=len(data))
            self.pending = data
            self._write()
            return
        self.stdin_open = False
        if not self.options.shutdown_on_eof:
            self.tracer.emit("stdin", "stdin at end of file; the socket stays open both ways")
        else:
            self.tracer.emit("stdin", "stdin at end of file: shutdown(SHUT_WR) sends FIN, the "
                             "peer will read end of stream")  # fmt: skip
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                raise fail(self.tracer, "shutdown", exc, "shutdown(SHUT_WR)") from exc
        if self.peer_sent_fin:
            self._linger()

    def _to_stdout(self, data: bytes) -> None:
        try:
            self.stdout.write(data)
            self.stdout.flush()
        except (BrokenPipeError, ValueError):
            self.tracer.emit("stdout", "stdout is closed: the data read is dropped")
