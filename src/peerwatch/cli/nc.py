"""``peerwatch nc``: a netcat that prints every step (the article's ``dnc``).

Events go to stderr with a timestamp, the peer's bytes to stdout, stdin to
the peer. ``--json`` follows the CLI's one convention (docs/JSON.md): every event
is a JSON line on stdout, and the peer's bytes come as ``data`` events among them
(exact in ``base64``, readable in ``text``), so one stream keeps their order.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
from typing import TYPE_CHECKING

from peerwatch.cli.args import port, positive, resolvable_host

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from peerwatch.nc.trace import Tracer


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "nc",
        help="traced netcat: every poll, read, write and TCP state change, timestamped",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  peerwatch nc -l 8080\n  peerwatch nc --keep-half-open "
        "--keepalive 5,1,3 --user-timeout 8000 10.0.0.2 8080",
    )
    parser.add_argument("-l", "--listen", action="store_true", help="accept one connection")
    parser.add_argument(
        "-s",
        "--source",
        type=resolvable_host,
        metavar="ADDR",
        help="address to listen on (-l; default 0.0.0.0)",
    )
    parser.add_argument(
        "host", nargs="?", type=resolvable_host, help="host to connect to (not with -l)"
    )
    parser.add_argument("port", type=port, help="port (with -l: 0 picks a free one)")
    parser.add_argument(
        "--keep-half-open",
        action="store_true",
        help="do not close when the peer closes its side (read 0), as dnc",
    )
    parser.add_argument(
        "--no-shutdown",
        action="store_true",
        help="on stdin EOF, do not shutdown(SHUT_WR) the socket (the peer sees no FIN)",
    )
    parser.add_argument(
        "--keepalive",
        type=_keepalive,
        metavar="IDLE,INTVL,CNT",
        help="SO_KEEPALIVE with TCP_KEEPIDLE, TCP_KEEPINTVL (seconds) and TCP_KEEPCNT",
    )
    parser.add_argument(
        "--user-timeout", type=_milliseconds, metavar="MS", help="TCP_USER_TIMEOUT in milliseconds"
    )
    parser.add_argument(
        "-w", "--wait", type=positive, metavar="S", help="connect timeout in seconds"
    )
    parser.add_argument(
        "--json", action="store_true", help="every event and the peer's bytes as JSON lines"
    )
    parser.set_defaults(func=run)


def _milliseconds(text: str) -> int:
    """TCP_USER_TIMEOUT: 0 (the kernel default) up to the kernel's INT_MAX."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds, not {text!r}") from None
    if not 0 <= value <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"must be 0..2147483647 ms, not {text}")
    return value


def _keepalive(text: str) -> tuple[int, int, int]:
    try:
        idle, interval, count = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected IDLE,INTVL,CNT, e.g. 5,1,3") from None
    if min(idle, interval, count) < 1 or max(idle, interval) > 32767 or count > 127:
        # the kernel's limits (MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT)
        raise argparse.ArgumentTypeError("keepalive: IDLE and INTVL 1..32767, CNT 1..127")
    return idle, interval, count


def run(args: argparse.Namespace) -> int:
    from peerwatch.nc.session import NcOptions, run_nc
    from peerwatch.nc.trace import Tracer

    if args.listen == (args.host is not None):
        print("peerwatch nc: give HOST PORT to connect, or -l PORT to listen", file=sys.stderr)
        return 2
    options = NcOptions(
        port=args.port,
        host=args.host,
        listen=args.listen,
        source=args.source,
        keep_half_open=args.keep_half_open,
        shutdown_on_eof=not args.no_shutdown,
        keepalive=args.keepalive,
        user_timeout_ms=args.user_timeout,
        connect_timeout=args.wait,
    )
    if not args.json:
        return run_nc(options, Tracer(sys.stderr))
    tracer = Tracer(sys.stdout, as_json=True)
    return run_nc(options, tracer, stdout=io.BufferedWriter(_DataEvents(tracer)))


class _DataEvents(io.RawIOBase):
    """Where the peer's bytes go with --json: one ``data`` event per write, on the trace."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self._tracer = tracer

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        chunk = bytes(data)
        self._tracer.emit(
            "data",
            f"{len(chunk)} bytes from the peer",
            bytes=len(chunk),
            text=chunk.decode("utf-8", "replace"),
            base64=base64.b64encode(chunk).decode("ascii"),
        )
        return len(chunk)
