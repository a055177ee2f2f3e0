"""The budget as each driver wants it: socket option triples, name maps, number maps.

Drivers set options on sockets they make themselves, before connecting, so
the values are ``guard``'s for a socket with no RTT sample yet (the user
timeout shortened by ``FRESH_SOCKET_LEAD``; see ``peerwatch.kernel.guarding``).
Options this platform lacks are left out rather than guessed.
"""

from __future__ import annotations

import socket

from peerwatch.kernel.guarding import FRESH_SOCKET_LEAD, with_lead
from peerwatch.kernel.knobs import (
    TCP_KEEPCNT,
    TCP_KEEPIDLE,
    TCP_KEEPINTVL,
    TCP_USER_TIMEOUT,
    KernelKnobs,
    knobs_for,
)

__all__ = ["derived_knobs", "socket_options", "tcp_options_by_name", "tcp_options_by_number"]


def derived_knobs(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3
) -> KernelKnobs:
    """``guard``'s values for ``timeout`` on a socket not yet connected."""
    knobs = knobs_for(timeout, probes=probes, nodelay=False, idle_limit=idle_limit)
    return with_lead(knobs, timeout, min(FRESH_SOCKET_LEAD, timeout / 2))


def tcp_options_by_name(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3
) -> dict[str, int]:
    """``{"TCP_KEEPIDLE": s, "TCP_KEEPINTVL": s, "TCP_KEEPCNT": n, "TCP_USER_TIMEOUT": ms}``."""
    k = derived_knobs(timeout, idle_limit=idle_limit, probes=probes)
    named = {
        "TCP_KEEPIDLE": (TCP_KEEPIDLE, k.keepalive_idle),
        "TCP_KEEPINTVL": (TCP_KEEPINTVL, k.keepalive_interval),
        "TCP_KEEPCNT": (TCP_KEEPCNT, k.keepalive_count),
        "TCP_USER_TIMEOUT": (TCP_USER_TIMEOUT, k.user_timeout_ms),
    }
    return {name: value for name, (number, value) in named.items() if number is not None}


def tcp_options_by_number(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3
) -> dict[int, int]:
    """The same keyed by option number (IPPROTO_TCP level), as redis-py and py-amqp take them."""
    numbers = {
        "TCP_KEEPIDLE": TCP_KEEPIDLE,
        "TCP_KEEPINTVL": TCP_KEEPINTVL,
        "TCP_KEEPCNT": TCP_KEEPCNT,
        "TCP_USER_TIMEOUT": TCP_USER_TIMEOUT,
    }
    named = tcp_options_by_name(timeout, idle_limit=idle_limit, probes=probes)
    return {int(numbers[name]): value for name, value in named.items()}  # type: ignore[arg-type]


def socket_options(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3
) -> list[tuple[int, int, int]]:
    """``(level, option, value)`` triples with SO_KEEPALIVE first (urllib3, httpx, aiohttp)."""
    by_number = tcp_options_by_number(timeout, idle_limit=idle_limit, probes=probes)
    return [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        *((socket.IPPROTO_TCP, number, value) for number, value in by_number.items()),
    ]


def apply_socket_options(sock: socket.socket, options: list[tuple[int, int, int]]) -> None:
    for level, option, value in options:
        sock.setsockopt(level, option, value)
