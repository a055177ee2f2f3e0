"""``peerwatch inspect``: every TCP connection of this host (network namespace) with a verdict.

Like ``ss -tinpo``, read through netlink sock_diag, plus the owning process and
the ``assess`` verdict with its reason. ``--watch`` refreshes a live view;
``--json`` prints one object per connection per line for scripts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

from peerwatch.tcpinfo import TcpState

if TYPE_CHECKING:
    from peerwatch.assessment import AssessPolicy
    from peerwatch.diag.view import Filters

_VERDICTS = ("ALIVE", "SUSPECT", "DEAD")


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
        type=_state,
        metavar="STATE",
        help="only this TCP state (ESTABLISHED, CLOSE_WAIT, close-wait, ...); repeatable. "
        "Without it, all but LISTEN and TIME_WAIT",
    )
    parser.add_argument("-a", "--all", action="store_true", help="every state, listeners too")
    parser.add_argument(
        "--port", action="append", type=int, default=[], help="local or remote port; repeatable"
    )
    parser.add_argument(
        "--addr",
        action="append",
        type=_address,
        default=[],
        help="local or remote IP address (e.g. the database host); repeatable",
    )
    parser.add_argument("--process", help="a pid, or part of the owning command's name")
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
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--watch", action="store_true", help="refresh until interrupted")
    parser.add_argument(
        "--interval", type=_positive, default=1.0, help="seconds between refreshes (1)"
    )
    parser.add_argument("--count", type=int, default=None, help="with --watch: stop after N")
    from peerwatch.cli import ops_args

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
        type=ops_args.seconds(2),  # keepalive counts whole seconds: nothing probes sooner
        metavar="S",
        help="audit: flag connections a middlebox dropping flows idle for S seconds would break "
        "(keepalive too late or off, user timeout too short), each with its fix",
    )
    policy = parser.add_argument_group("verdict thresholds (seconds)")
    policy.add_argument("--suspect-after", type=float, default=1.0, metavar="S")
    policy.add_argument("--dead-after", type=float, default=10.0, metavar="S")
    policy.add_argument("--close-wait-after", type=float, default=60.0, metavar="S")
    policy.add_argument("--idle-after", type=float, default=60.0, metavar="S")
    policy.add_argument("--keepalive-bound-after", type=float, default=300.0, metavar="S")
    parser.set_defaults(func=run)


def _state(text: str) -> TcpState:
    name = text.strip().upper().replace("-", "_")
    aliases = {"FIN_WAIT_1": "FIN_WAIT1", "FIN_WAIT_2": "FIN_WAIT2", "SYN_RECEIVED": "SYN_RECV"}
    name = aliases.get(name, name)
    try:
        return TcpState[name]
    except KeyError:
        choices = ", ".join(s.name for s in TcpState if s is not TcpState.UNKNOWN)
        raise argparse.ArgumentTypeError(f"unknown state {text!r}; one of {choices}") from None


def _address(text: str) -> str:
    """Normalised, so that 2001:DB8::1 matches what the kernel reports (2001:db8::1)."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def run(args: argparse.Namespace) -> int:
    from peerwatch.assessment import AssessPolicy, Status
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
        for line in json_lines(snapshot(filters, policy), taken_at):
            print(line)
        sys.stdout.flush()
        if remaining is not None:
            remaining -= 1
            if remaining == 0:
                break
        time.sleep(args.interval)
    return 0


def _print_table(filters: Filters, policy: AssessPolicy, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from peerwatch.diag.view import render_table, snapshot

    # not a terminal (a pipe, a file): wide enough that rows do not fold into many
    # lines, unless COLUMNS says otherwise (rich reads it)
    wide = sys.stdout.isatty() or "COLUMNS" in os.environ
    console = Console(width=None if wide else 200)
    if not args.watch:
        console.print(render_table(snapshot(filters, policy)))
        return 0
    remaining = args.count
    with Live(console=console, auto_refresh=False) as live:
        while True:
            title = f"peerwatch inspect — {time.strftime('%H:%M:%S')}, every {args.interval:g} s"
            live.update(render_table(snapshot(filters, policy), title), refresh=True)
            if remaining is not None:
                remaining -= 1
                if remaining <= 0:
                    break
            time.sleep(args.interval)
    return 0
