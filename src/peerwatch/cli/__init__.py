"""Command-line entry point: ``peerwatch <command>``.

Each subcommand lives in its own module under ``peerwatch.cli`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
``(argparse.Namespace) -> int``. Subcommand modules keep their top-level imports
light (argparse and the standard library) and import heavy extras (rich,
pyroute2, matplotlib) inside the function that runs, so ``peerwatch --help``
stays fast and works without the extras installed.

Every command follows one convention (``peerwatch.cli.args``): arguments are
validated where they are parsed, and anything a user can type ends in a result
or in one line on stderr with exit status 2, never in a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Sequence

from peerwatch.cli.args import OneLineParser

#: Subcommand name -> module under peerwatch.cli. Order is the order of --help.
COMMANDS: dict[str, str] = {
    "lab": "lab",
    "demo": "demo",
    "nc": "nc",
    "inspect": "inspect",
    "serve": "serve",
    "ping": "ping",
    "guard": "guard",
    "exporter": "exporter",
    "run": "run",
}


def installed_version() -> str:
    """The version pip installed (package metadata), so it can never drift from pyproject.toml."""
    try:
        return importlib.metadata.version("peerwatch")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="peerwatch",
        description="Know whether the peer of a TCP connection is alive, and if not, why.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=OneLineParser
    )
    for module_name in COMMANDS.values():
        importlib.import_module(f"peerwatch.cli.{module_name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, its line already printed)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    from peerwatch.errors import ConfigError

    try:
        result: int = func(args)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:  # settings that contradict each other: a usage error too
        print(f"peerwatch {args.command}: {exc}", file=sys.stderr)
        return 2
    return result
