"""``peerwatch guard --pid PID``: protect a running program's TCP connections from outside.

Sets keepalive and TCP_USER_TIMEOUT, derived from one detection bound
(``--timeout``, as ``peerwatch.guard()`` does in a program), on the TCP
sockets of process PID, through descriptors borrowed with pidfd_getfd (Linux
5.6, ptrace access to PID needed). A listening socket passes the options on to
the connections it accepts later. Only the sockets the filters select are
touched; each is reported with what was applied and the bounds that follow:

    peerwatch guard --pid 4242 --timeout 30 --port 5432
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peerwatch.kernel.foreign import ForeignSocket
    from peerwatch.kernel.guarding import GuardResult


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from peerwatch.cli.args import count, ip_address, pid, port, positive, tcp_state

    parser = subparsers.add_parser(
        "guard",
        help="apply keepalive and TCP_USER_TIMEOUT to a running process's TCP sockets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pid", type=pid, required=True, help="the process to protect")
    parser.add_argument(
        "--timeout",
        type=positive,
        default=10.0,
        metavar="S",
        help="a dead peer is noticed within about S seconds, idle or busy (10)",
    )
    parser.add_argument(
        "--probes",
        type=count,
        default=3,
        help="keepalive probes before giving up (3)",
    )
    parser.add_argument(
        "--state",
        action="append",
        type=tcp_state,
        metavar="STATE",
        help="only sockets in this TCP state (ESTABLISHED, LISTEN, ...); repeatable",
    )
    parser.add_argument(
        "--port",
        action="append",
        type=port,
        default=[],
        help="local or remote port; repeatable",
    )
    parser.add_argument(
        "--addr", action="append", type=ip_address, default=[], help="local or remote IP address"
    )
    parser.add_argument("--dry-run", action="store_true", help="list the sockets, change nothing")
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout (docs/JSON.md)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from peerwatch.errors import RemedyRefused
    from peerwatch.kernel.foreign import tcp_sockets
    from peerwatch.kernel.guarding import guard
    from peerwatch.kernel.pidfd import open_process

    states = frozenset(args.state or ())
    ports, addrs = frozenset(args.port), frozenset(args.addr)

    def keep(sock: ForeignSocket) -> bool:
        ends = [sock.local] if sock.remote is None else [sock.local, sock.remote]
        return (
            (not states or sock.state in states)
            and (not ports or any(port in ports for _, port in ends))
            and (not addrs or any(host in addrs for host, _ in ends))
        )

    count = 0
    try:
        with open_process(args.pid) as process:
            for sock, dup in tcp_sockets(process, keep):
                count += 1
                if args.dry_run:
                    _report(args, sock, None)
                    continue
                _report(args, sock, guard(dup, args.timeout, probes=args.probes))
    except RemedyRefused as exc:
        print(f"peerwatch guard: {exc}", file=sys.stderr)
        return 1
    if args.json:
        from peerwatch.cli.jsonout import emit

        emit("summary", pid=args.pid, sockets=count, dry_run=args.dry_run)
    else:
        done = "would guard" if args.dry_run else "guarded"
        print(f"{done} {count} TCP socket{'s' if count != 1 else ''} of process {args.pid}")
    return 0


def _report(args: argparse.Namespace, sock: ForeignSocket, result: GuardResult | None) -> None:
    if args.json:
        from peerwatch.cli.jsonout import emit

        emit("socket", **sock.as_dict(), guard=result and result.as_dict())
        return
    head = f"fd {sock.fd:<4} {sock.state.name:<11} {sock.local_text} -> {sock.remote_text}"
    print(f"{head}  {'(dry run)' if result is None else result.describe()}", flush=True)
