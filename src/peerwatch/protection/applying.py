"""Protect one connection: decide (TCP? loopback?), ``guard`` it, log one line.

Everything per connection goes through ``protect_socket``; the hooks in
``sockets`` and ``libpq`` only find the connections. ``guard`` and ``logging``
are imported on the first connection, not at start-up, to keep the bootstrap
cheap (see ``settings``).
"""

from __future__ import annotations

import socket

from peerwatch.protection import state
from peerwatch.protection.addresses import LOOPBACK, UNKNOWN, classify, describe_peer

TYPE_CHECKING = False  # typing costs milliseconds; this runs in every protected program

if TYPE_CHECKING:
    import logging

_IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)
_TCP_PROTOCOLS = (0, socket.IPPROTO_TCP, _IPPROTO_MPTCP)
_INET = (socket.AF_INET, socket.AF_INET6)
_logger: logging.Logger | None = None


def logger() -> logging.Logger:
    """The ``peerwatch.protect`` logger, created on first use."""
    global _logger
    if _logger is None:
        import logging

        _logger = logging.getLogger("peerwatch.protect")
    return _logger


def is_tcp(sock: socket.socket) -> bool:
    """True for an IPv4/IPv6 stream socket of TCP (or MPTCP): the only kind protected."""
    return sock.family in _INET and sock.type == socket.SOCK_STREAM and sock.proto in _TCP_PROTOCOLS


def protect_socket(sock: socket.socket, address: object, how: str) -> str:
    """Guard ``sock`` if settings say so; returns what was done (for the hooks and tests).

    ``address`` is the peer's sockaddr as the program gave it (or as accept
    returned it). Never raises: a connection the program asked for must not
    fail because protection could not be applied; that is logged as a warning.
    """
    settings = state.current
    if settings is None:
        return "off"
    host = address[0] if isinstance(address, tuple) and address else None
    kind = classify(host)
    if kind == LOOPBACK and not settings.include_loopback:
        logger().debug("left alone (loopback): %s fd %d -> %s", how, sock.fileno(), host)
        return "loopback"
    try:
        from peerwatch.guarding import guard

        result = guard(
            sock, settings.timeout, probes=settings.probes, idle_limit=settings.idle_limit
        )
    except (OSError, ValueError) as exc:
        logger().warning(
            "could not protect %s fd %d -> %s: %s",
            how,
            sock.fileno(),
            describe_peer(address),
            exc,
        )
        return "failed"
    level = 20 if result.complete else 30  # INFO, or WARNING when an option is missing
    by_name = " (by name)" if kind == UNKNOWN else ""
    logger().log(
        level,
        "protected %s fd %d -> %s%s: %s",
        how,
        sock.fileno(),
        describe_peer(address),
        by_name,
        result.describe(),
    )
    return "protected"
