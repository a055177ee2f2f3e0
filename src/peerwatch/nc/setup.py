"""Getting ``peerwatch nc`` its one connection: options, connect or listen and accept, all traced.

Socket options (keepalive, TCP_USER_TIMEOUT) are set before connect, or on the
listening socket so the accepted one inherits them, and each is reported as set
or unavailable. A failure is reported with its errno's meaning and ends the run
with status 1 (``Done``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from peerwatch.kernel.knobs import TCP_KEEPCNT, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_USER_TIMEOUT
from peerwatch.nc.meaning import errno_text
from peerwatch.nc.trace import Tracer

__all__ = ["Done", "NcOptions", "accept_one", "connect", "endpoint", "fail"]


@dataclass(frozen=True)
class NcOptions:
    port: int
    host: str | None = None  # connect to; None with listen=True
    listen: bool = False
    source: str | None = None  # address to bind (listen mode: default all IPv4 addresses)
    keep_half_open: bool = False
    shutdown_on_eof: bool = True  # stdin EOF -> shutdown(SHUT_WR): the peer reads b""
    keepalive: tuple[int, int, int] | None = None  # idle, interval, count (seconds, seconds, n)
    user_timeout_ms: int | None = None
    connect_timeout: float | None = None
    watch_interval: float = 0.2


class Done(Exception):
    """Ends the run with ``status``: 0 closed cleanly, 1 an error was reported."""

    def __init__(self, status: int) -> None:
        self.status = status


def fail(tracer: Tracer, call: str, exc: OSError, what: str) -> Done:
    name, meaning = errno_text(exc.errno)
    message = f"{what} failed: {name}" + (f" ({meaning})" if meaning else f" ({exc.strerror})")
    tracer.emit("error", message, call=call, errno=name, meaning=meaning)
    return Done(1)


def _apply_options(sock: socket.socket, options: NcOptions, tracer: Tracer) -> None:
    settings: list[tuple[str, int, int | None, int]] = []
    if options.keepalive is not None:
        idle, interval, count = options.keepalive
        settings += [
            ("SO_KEEPALIVE", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            ("TCP_KEEPIDLE", socket.IPPROTO_TCP, TCP_KEEPIDLE, idle),
            ("TCP_KEEPINTVL", socket.IPPROTO_TCP, TCP_KEEPINTVL, interval),
            ("TCP_KEEPCNT", socket.IPPROTO_TCP, TCP_KEEPCNT, count),
        ]
    if options.user_timeout_ms is not None:
        settings.append(
            ("TCP_USER_TIMEOUT", socket.IPPROTO_TCP, TCP_USER_TIMEOUT, options.user_timeout_ms)
        )
    for name, level, opt, value in settings:
        if opt is None:
            tracer.emit("option", f"{name} is not available on this platform", option=name)
            continue
        try:
            sock.setsockopt(level, opt, value)
        except OSError as exc:
            raise fail(tracer, "setsockopt", exc, f"setsockopt({name}, {value})") from exc
        tracer.emit("option", f"set {name} = {value}", option=name, value=value)


def endpoint(addr: tuple[object, ...]) -> str:
    host, port = str(addr[0]), addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect(options: NcOptions, tracer: Tracer) -> socket.socket:
    assert options.host is not None
    try:
        candidates = socket.getaddrinfo(options.host, options.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        tracer.emit("error", f"cannot resolve {options.host}: {exc.strerror}", call="getaddrinfo")
        raise Done(1) from exc
    last: Done | None = None
    for family, kind, proto, _, address in candidates:
        sock = socket.socket(family, kind, proto)
        try:
            _apply_options(sock, options, tracer)
            tracer.emit("connect", f"connecting to {endpoint(address)}", remote=endpoint(address))
            sock.settimeout(options.connect_timeout)
            sock.connect(address)
        except TimeoutError:
            tracer.emit("error", f"connect timed out after {options.connect_timeout} s "
                        "(no answer to our SYN)", call="connect", errno="ETIMEDOUT")  # fmt: skip
            sock.close()
            last = Done(1)
            continue
        except OSError as exc:
            sock.close()
            last = fail(tracer, "connect", exc, "connect")
            continue
        except Done:
            sock.close()
            raise
        tracer.emit(
            "connected",
            f"connected {endpoint(sock.getsockname())} -> {endpoint(sock.getpeername())}",
            local=endpoint(sock.getsockname()),
            remote=endpoint(sock.getpeername()),
        )
        return sock
    raise last if last is not None else Done(1)


def accept_one(options: NcOptions, tracer: Tracer) -> socket.socket:
    host = options.source or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tracer.emit("option", "set SO_REUSEADDR = 1 (bind even while old connections sit in "
                    "TIME_WAIT)", option="SO_REUSEADDR", value=1)  # fmt: skip
        _apply_options(listener, options, tracer)  # accepted sockets inherit them
        try:
            listener.bind((host, options.port))
            listener.listen(1)
        except OSError as exc:
            raise fail(tracer, "bind", exc, f"bind/listen on {host}:{options.port}") from exc
        local = endpoint(listener.getsockname())
        tracer.emit("listen", f"listening on {local}", local=local)
        sock, peer = listener.accept()
        tracer.emit(
            "accepted",
            f"accepted connection from {endpoint(peer)} on {endpoint(sock.getsockname())}",
            local=endpoint(sock.getsockname()),
            remote=endpoint(peer),
        )
    tracer.emit("close", "closed the listening socket (one connection, as nc -l)")
    return sock
