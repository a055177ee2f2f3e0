"""``peerwatch run [options] -- COMMAND``: run a Python program, every TCP connection protected.

Nothing in the program changes: the command is executed with the bootstrap
first on ``PYTHONPATH`` and the settings in ``PEERWATCH_PROTECT`` (the way
``opentelemetry-instrument`` works), so every Python process it starts,
children included, protects each TCP connection it opens: keepalive and
``TCP_USER_TIMEOUT`` from one budget (``--timeout``), as ``peerwatch.guard``
does, and libpq's own options for psycopg. Loopback connections are left alone
unless ``--include-loopback``; accepted ones are protected with
``--accepted``. ``-v`` prints one line per connection on stderr.

``--print-env`` prints the two variables instead, for a container image
(``ENV PYTHONPATH=... PEERWATCH_PROTECT=...``).

Exit status: the command's own; 2 for a usage error; 127 when the command
is not found.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a Python program with every TCP connection it opens protected (zero code)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="peerwatch run [options] -- COMMAND [ARG...]",
    )
    parser.add_argument(
        "-t",
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="a dead peer becomes an error within S seconds, idle or busy (default 10)",
    )
    parser.add_argument(
        "--idle-limit",
        type=float,
        metavar="S",
        help="idle timeout of a load balancer or NAT on the path: keepalive probes come sooner",
    )
    parser.add_argument(
        "--include-loopback",
        action="store_true",
        help="protect connections to 127.0.0.0/8 and ::1 too",
    )
    parser.add_argument(
        "--accepted", action="store_true", help="protect accepted connections too (servers)"
    )
    parser.add_argument(
        "--probes", type=int, default=3, help="keepalive probes before giving up (default 3)"
    )
    parser.add_argument(
        "--no-defend",
        dest="defend",
        action="store_false",
        help="let the program (a driver) set keepalive and the user timeout again after "
        "connecting; by default peerwatch's values stay (docs/DRIVERS.md)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="print what was applied to each connection on stderr (-vv: also what was not)",
    )
    parser.add_argument(
        "--print-env",
        action="store_true",
        help="print PYTHONPATH and PEERWATCH_PROTECT for a container instead of running",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the program and its arguments")
    parser.set_defaults(func=run, _parser=parser)


def run(args: argparse.Namespace) -> int:
    from peerwatch.errors import ConfigError
    from peerwatch.protection.environment import protected_environment
    from peerwatch.protection.settings import ENV_VAR, ProtectSettings

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    try:
        settings = ProtectSettings(
            args.timeout,
            idle_limit=args.idle_limit,
            include_loopback=args.include_loopback,
            accepted=args.accepted,
            probes=args.probes,
            defend=args.defend,
            log=("", "info", "debug")[min(args.verbose, 2)],
        )
    except ConfigError as exc:
        print(f"peerwatch run: {exc}", file=sys.stderr)
        return 2
    env = protected_environment(settings, os.environ)
    if args.print_env:
        for name in ("PYTHONPATH", ENV_VAR):
            print(f"{name}={shlex.quote(env[name])}")
        return 0
    if not command:
        print(
            "peerwatch run: no command given (peerwatch run [options] -- COMMAND)", file=sys.stderr
        )
        return 2
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        print(f"peerwatch run: command not found: {command[0]}", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"peerwatch run: permission denied: {command[0]}", file=sys.stderr)
        return 126
    except OSError as exc:
        print(f"peerwatch run: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 126
    return 0  # not reached: exec replaced this process
