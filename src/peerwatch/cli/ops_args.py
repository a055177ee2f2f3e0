"""Argument types of the operator commands (guard, exporter, inspect --idle-limit).

Each turns a typo into a one-line argparse error (exit status 2), never a
traceback. Kept in one module so the commands agree on what a port, a number
of seconds or a process id is.
"""

from __future__ import annotations

import argparse
import math
import socket
from collections.abc import Callable

__all__ = ["host", "pid", "port", "seconds", "whole_number"]


def port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port (0-65535): {text!r}")
    return int(text)


def pid(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a process id: {text!r}")
    return int(text)


def host(text: str) -> str:
    """A name or address this machine can resolve (to listen on it)."""
    try:
        socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise argparse.ArgumentTypeError(f"cannot resolve {text!r}") from None
    return text


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """A type accepting whole numbers from ``low`` to ``high`` (no upper bound if None)."""

    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
            bound = f"from {low} to {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be a whole number {bound}: {text!r}")
        return int(text)

    return parse


def seconds(minimum: float = 0.0, *, inclusive: bool = True) -> Callable[[str], float]:
    """A type accepting a finite number of seconds >= ``minimum`` (> if not inclusive)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        ok = value >= minimum if inclusive else value > minimum
        if not math.isfinite(value) or not ok:
            sign = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(
                f"must be a number of seconds {sign} {minimum:g}: {text!r}"
            )
        return value

    return parse
