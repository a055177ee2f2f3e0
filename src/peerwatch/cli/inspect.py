"""``peerwatch inspect``: every TCP connection of this host (network namespace) with a verdict.

Like ``ss -tinpo``, read through netlink sock_diag, plus the owning process and
the ``assess`` verdict with its reason ("why"), worst first. The columns mean
what ``ss`` means (``retrans`` is ss's ``retrans:a/b``, ``timer`` its ``-o``
timer); on a narrow terminal the least telling columns are dropped whole, never
the verdict or the why. ``--watch`` redraws in place; ``--json`` prints one
``connection`` object per line (docs/JSON.md). Remedies: ``--destroy`` ends the
connections judged dead (a dry run unless ``--yes``); ``--idle-limit S`` audits
keepalive and user timeouts against a middlebox's idle limit.

examples:
  peerwatch inspect --problems                  what to look at now
  peerwatch inspect --peer db.internal:5432     every connection to the database
  peerwatch inspect --pid 4242 --sort silent    one process, longest silent first
  peerwatch inspect --watch --interval 2        live, like top
  peerwatch inspect --destroy --port 5432       which dead ones --yes would end
  peerwatch inspect --idle-limit 350            what an AWS NLB's idle limit breaks
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

from peerwatch.cli.args import (
    at_least,
    count,
    ip_address,
    non_negative,
    pid,
    port,
    positive,
    resolve,
    tcp_state,
)
from peerwatch.kernel.tcpinfo import TcpState

if TYPE_CHECKING:
    from peerwatch.assessment.model import AssessPolicy
    from peerwatch.diag.view import Filters, PeerMatch, Row

_VERDICTS = ("ALIVE", "SUSPECT", "DEAD")
#: view.SORTS's names, spelt here so --help needs no import of the view
_SORTS = ("verdict", "state", "local", "peer", "process", "silent", "queues", "retrans", "rtt")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="list this host's TCP connections with a verdict on each peer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--state",
        action="append",
        type=tcp_state,
        metavar="STATE",
        help="only this TCP state (ESTABLISHED, CLOSE_WAIT, close-wait, ...); repeatable. "
        "Without it, all but LISTEN and TIME_WAIT",
    )
    parser.add_argument("-a", "--all", action="store_true", help="every state, listeners too")
    parser.add_argument(
        "--port", action="append", type=port, default=[], help="local or remote port; repeatable"
    )
    parser.add_argument(
        "--addr",
        action="append",
        type=ip_address,
        default=[],
        help="local or remote IP address (e.g. the database host); repeatable",
    )
    parser.add_argument(
        "--peer",
        action="append",
        type=_peer,
        default=[],
        metavar="HOST[:PORT]",
        help="the remote end: an address or host name, with a port (db:5432, [::1]:80,"
        " :443); repeatable",
    )
    parser.add_argument(
        "--pid", action="append", type=pid, default=[], help="held by this process; repeatable"
    )
    parser.add_argument("--process", help="a pid, or part of the owning command's name")
    parser.add_argument(
        "--sort",
        choices=_SORTS,
        default="verdict",
        help="verdict (worst first, the default), state, local, peer, process; largest"
        " first: silent, queues, retrans, rtt",
    )
    parser.add_argument(
        "--verdict",
        action="append",
        choices=_VERDICTS,
        type=str.upper,
        default=[],
        help="only connections with this verdict; repeatable",
    )
    parser.add_argument(
        "--problems", action="store_true", help="only SUSPECT and DEAD (same as two --verdict)"
    )
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout (docs/JSON.md)")
    parser.add_argument("--watch", action="store_true", help="redraw in place until interrupted")
    parser.add_argument(
        "--interval", type=positive, default=1.0, help="seconds between refreshes (1)"
    )
    parser.add_argument("--count", type=count, default=None, help="with --watch: stop after N")
    remedy = parser.add_argument_group("remedies")
    remedy.add_argument(
        "--destroy",
        action="store_true",
        help="end the selected connections judged DEAD (all selected ones with --verdict or "
        "--problems) via sock_diag SOCK_DESTROY, as ss -K; a dry run unless --yes",
    )
    remedy.add_argument("--yes", action="store_true", help="with --destroy: really end them")
    remedy.add_argument(
        "--idle-limit",
        type=at_least(2),  # keepalive counts whole seconds: nothing probes sooner
        metavar="S",
        help="audit: flag connections a middlebox dropping flows idle for S seconds would break "
        "(keepalive too late or off, user timeout too short), each with its fix",
    )
    policy = parser.add_argument_group("verdict thresholds (seconds)")
    policy.add_argument("--suspect-after", type=non_negative, default=1.0, metavar="S")
    policy.add_argument("--dead-after", type=non_negative, default=10.0, metavar="S")
    policy.add_argument("--close-wait-after", type=non_negative, default=60.0, metavar="S")
    policy.add_argument("--idle-after", type=non_negative, default=60.0, metavar="S")
    policy.add_argument("--keepalive-bound-after", type=non_negative, default=300.0, metavar="S")
    parser.set_defaults(func=run)


def _peer(text: str) -> PeerMatch:
    """HOST, HOST:PORT, [V6]:PORT, a bare IPv6 address, or :PORT; a host name is resolved now."""
    from peerwatch.diag.view import PeerMatch

    host, port_text = text, None
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed:
            raise argparse.ArgumentTypeError(f"expected [ADDRESS] or [ADDRESS]:PORT, not {text!r}")
        if rest:
            if not rest.startswith(":"):
                raise argparse.ArgumentTypeError(f"expected [ADDRESS]:PORT, not {text!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    wanted_port = None if port_text is None else port(port_text)
    if not host:
        if wanted_port is None:
            raise argparse.ArgumentTypeError("expected HOST, HOST:PORT or :PORT")
        return PeerMatch(None, wanted_port)
    return PeerMatch(resolve(host), wanted_port)


def run(args: argparse.Namespace) -> int:
    from peerwatch.assessment.model import AssessPolicy, Status
    from peerwatch.diag.view import Filters
    from peerwatch.errors import ConfigError

    if args.yes and not args.destroy:
        print("peerwatch inspect: --yes only confirms --destroy", file=sys.stderr)
        return 2
    if args.destroy and args.idle_limit is not None:
        print("peerwatch inspect: --destroy and --idle-limit are separate runs", file=sys.stderr)
        return 2
    if args.destroy and args.watch:
        print(
            "peerwatch inspect: --destroy acts once; it cannot be combined with --watch",
            file=sys.stderr,
        )
        return 2
    statuses = {Status(v) for v in args.verdict}
    if args.problems:
        statuses |= {Status.SUSPECT, Status.DEAD}
    states: frozenset[TcpState] | None = None
    if args.state:
        states = frozenset(args.state)
    elif args.all:
        states = frozenset(TcpState)
    filters = Filters(
        states=states,
        ports=frozenset(args.port),
        addresses=frozenset(args.addr),
        process=args.process,
        statuses=frozenset(statuses),
        pids=frozenset(args.pid),
        peers=tuple(args.peer),
    )
    try:
        policy = AssessPolicy(
            suspect_after=args.suspect_after,
            dead_after=args.dead_after,
            close_wait_after=args.close_wait_after,
            idle_after=args.idle_after,
            keepalive_bound_after=args.keepalive_bound_after,
        )
    except ConfigError as exc:
        print(f"peerwatch inspect: {exc}", file=sys.stderr)
        return 2
    try:
        if args.destroy:
            from peerwatch.cli.inspect_destroy import run_destroy

            return run_destroy(filters, policy, args)
        if args.idle_limit is not None:
            from peerwatch.cli.inspect_budget import run_budget

            return run_budget(filters, policy, args)
        if args.json:
            return _print_json(filters, policy, args)
        return _print_table(filters, policy, args)
    except BrokenPipeError:  # the reader went away (| head): not an error of ours
        _silence_stdout()
        return 0
    except OSError as exc:
        print(f"peerwatch inspect: cannot read sockets via netlink: {exc}", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _refreshes(args: argparse.Namespace) -> int | None:
    if not args.watch:
        return 1
    return args.count  # type: ignore[no-any-return]


def _print_json(filters: Filters, policy: AssessPolicy, args: argparse.Namespace) -> int:
    from peerwatch.diag.view import json_lines, snapshot

    remaining = _refreshes(args)
    while remaining is None or remaining > 0:
        taken_at = time.time()
        rows = snapshot(filters, policy, args.sort)
        sys.stdout.write("".join(line + "\n" for line in json_lines(rows, taken_at)))
        sys.stdout.flush()
        if remaining is not None:
            remaining -= 1
            if remaining == 0:
                break
        time.sleep(args.interval)
    return 0


def _print_table(filters: Filters, policy: AssessPolicy, args: argparse.Namespace) -> int:
    from peerwatch.diag.table import TCP_INFO_FIELDS, render
    from peerwatch.diag.view import snapshot, summary

    def table_rows() -> list[Row]:
        # only what the table shows: no evidence figures, only its TCP_INFO fields
        return snapshot(filters, policy, args.sort, figures=False, tcp_info_fields=TCP_INFO_FIELDS)

    tty = sys.stdout.isatty()
    # a terminal: its width; a pipe or file: unbounded (one line per row, for grep),
    # unless COLUMNS says otherwise
    width = _width(tty)
    color = tty and "NO_COLOR" not in os.environ
    if not args.watch:
        rows = table_rows()
        drawn = render(rows, width, color=color)
        sys.stdout.write("\n".join([*drawn.lines, _footer(summary(rows), drawn.hidden)]) + "\n")
        return 0
    remaining = args.count
    live = tty  # redraw in place; into a pipe, frames follow each other
    if live:
        sys.stdout.write("\x1b[?25l\x1b[H\x1b[2J")  # hide the cursor, clear once
    try:
        while True:
            started = time.monotonic()
            rows = table_rows()
            took = time.monotonic() - started
            title = (
                f"peerwatch inspect - {time.strftime('%H:%M:%S')}, every {args.interval:g} s"
                f" (read and judged in {took * 1000:.0f} ms)"
            )
            height = os.get_terminal_size(sys.stdout.fileno()).lines if live else None
            drawn = render(
                rows,
                _width(tty),
                color=color,
                max_lines=None if height is None else max(2, height - 3),
            )
            footer = _footer(summary(rows), drawn.hidden)
            if drawn.rows < len(rows):
                footer += f"; {len(rows) - drawn.rows} more below (filter, or --json)"
            frame = [title, *drawn.lines, footer]
            if live:  # home, each line cleared to its end, then the rest of the screen
                sys.stdout.write("\x1b[H" + "\x1b[K\n".join(frame) + "\x1b[K\x1b[J")
            else:
                sys.stdout.write("\n".join(frame) + "\n\n")
            sys.stdout.flush()
            if remaining is not None:
                remaining -= 1
                if remaining <= 0:
                    break
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    finally:
        if live:
            sys.stdout.write("\x1b[?25h\n")  # the cursor back, below the last frame
            sys.stdout.flush()
    return 0


def _width(tty: bool) -> int | None:
    if "COLUMNS" in os.environ:
        try:
            return max(20, int(os.environ["COLUMNS"]))
        except ValueError:
            pass
    if not tty:
        return None
    return os.get_terminal_size(sys.stdout.fileno()).columns


def _footer(counts: str, hidden: tuple[str, ...]) -> str:
    if not hidden:
        return counts
    return f"{counts} (too narrow for: {', '.join(hidden)})"
