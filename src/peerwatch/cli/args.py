"""The one command-line convention every ``peerwatch`` command follows.

What a user types is checked where it is parsed, so a typo ends in one line on
stderr and exit status 2 (as argparse does for an unknown option), never in a
traceback or, worse, in a silently different action (``--port 70000`` used to
listen on 4464: the kernel keeps the low 16 bits). The types here are what
``add_argument(type=...)`` takes: each raises ``argparse.ArgumentTypeError``
with the reason, and ``OneLineParser`` prints it as
``peerwatch ping: argument port: a port is 0..65535, not 99999``.

A command whose extras are not installed says so the same way everywhere:
``require_extras`` (exit status 2 with the ``pip install`` line).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from peerwatch.kernel.tcpinfo import TcpState

__all__ = [
    "OneLineParser",
    "at_least",
    "count",
    "count_at_most",
    "ip_address",
    "missing_extras",
    "non_negative",
    "pid",
    "port",
    "positive",
    "require_extras",
    "resolvable_host",
    "resolve",
    "tcp_state",
]


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line: ``PROG: MESSAGE (see --help)``.

    argparse prints the whole usage block first; at 3 a.m. the reason is what
    matters, and scripts reading stderr get one line to log. Exit status stays 2.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _number(text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {noun}, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, not {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port, 0..65535 (0: let the kernel pick, where that makes sense)."""
    value = int(_number(text, int))
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, not {text}")
    return value


def positive(text: str) -> float:
    """Seconds (or another quantity) that must be > 0: an interval, a timeout."""
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def non_negative(text: str) -> float:
    """Seconds that may be 0 (a threshold: 0 means at once)."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def count(text: str) -> int:
    """A number of things (workers, repetitions, bytes): an integer >= 1."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {text}")
    return value


def count_at_most(limit: int) -> Callable[[str], int]:
    """A ``count`` no larger than ``limit`` (``exporter --top``: label cardinality is bounded)."""

    def parse(text: str) -> int:
        value = count(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be <= {limit}, not {text}")
        return value

    return parse


def at_least(minimum: float) -> Callable[[str], float]:
    """Seconds that must be >= ``minimum`` (``--idle-limit``: keepalive counts whole seconds,
    so nothing can probe a connection sooner than that)."""

    def parse(text: str) -> float:
        value = _number(text, float)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, not {text}")
        return value

    return parse


def pid(text: str) -> int:
    """A process id: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a pid is a positive integer, not {text!r}")
    return int(text)


def tcp_state(text: str) -> TcpState:
    """A TCP state by the kernel's name or ss's spelling (``close-wait``, ``FIN-WAIT-1``)."""
    from peerwatch.kernel.tcpinfo import TcpState

    name = text.strip().upper().replace("-", "_")
    aliases = {"FIN_WAIT_1": "FIN_WAIT1", "FIN_WAIT_2": "FIN_WAIT2", "SYN_RECEIVED": "SYN_RECV"}
    name = aliases.get(name, name)
    try:
        return TcpState[name]
    except KeyError:
        choices = ", ".join(s.name for s in TcpState if s is not TcpState.UNKNOWN)
        raise argparse.ArgumentTypeError(f"unknown state {text!r}; one of {choices}") from None


def ip_address(text: str) -> str:
    """An IP address, normalised so that 2001:DB8::1 matches what the kernel reports."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def resolvable_host(text: str) -> str:
    """A host name or address that resolves now (so ``ping nosuchhost`` fails at parse time).

    The resolution is repeated where the connection is made; this only refuses
    what cannot work, with the resolver's own reason.
    """
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    resolve(host)
    return host


def resolve(host: str) -> frozenset[str]:
    """Every address ``host`` resolves to, as the kernel prints them (no IPv6 zone).

    Raises ``argparse.ArgumentTypeError`` with the resolver's reason.
    """
    import ipaddress

    if not host:
        raise argparse.ArgumentTypeError("empty host name")
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise argparse.ArgumentTypeError(f"cannot resolve {host!r}: {reason}") from None
    return frozenset(str(ipaddress.ip_address(str(info[4][0]).partition("%")[0])) for info in found)


def missing_extras(modules: list[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here (without importing them)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def require_extras(command: str, extra: str, modules: list[str]) -> int | None:
    """None when ``modules`` import; else print the one install hint and return 2.

    Callers: ``if (code := require_extras("lab", "lab", [...])) is not None: return code``.
    """
    missing = missing_extras(modules)
    if not missing:
        return None
    print(
        f"peerwatch {command}: needs {', '.join(missing)}: pip install 'peerwatch[{extra}]'",
        file=sys.stderr,
    )
    return 2
