"""Protect one connection: decide (TCP? loopback?), ``guard`` it, log one line.

Everything per connection goes through ``protect_socket``; the hooks in
``sockets`` and ``libpq`` only find the connections. ``guard`` and ``logging``
are imported on the first connection, not at start-up, to keep the bootstrap
cheap (see ``settings``).
"""

from __future__ import annotations

import socket

from peerwatch.protection import defence, state
from peerwatch.protection.addresses import LOOPBACK, UNKNOWN, classify, describe_peer
from peerwatch.protection.logs import logger

TYPE_CHECKING = False  # typing costs milliseconds; this runs in every protected program

if TYPE_CHECKING:
    from peerwatch.kernel.guarding import GuardResult
    from peerwatch.kernel.knobs import KernelKnobs
    from peerwatch.protection.settings import ProtectSettings

_IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)
_TCP_PROTOCOLS = (0, socket.IPPROTO_TCP, _IPPROTO_MPTCP)
_INET = (socket.AF_INET, socket.AF_INET6)


def is_tcp(sock: socket.socket) -> bool:
    """True for an IPv4/IPv6 stream socket of TCP (or MPTCP): the only kind protected."""
    return sock.family in _INET and sock.type == socket.SOCK_STREAM and sock.proto in _TCP_PROTOCOLS


def protect_socket(sock: socket.socket, address: object, how: str, *, fresh: bool = False) -> str:
    """Guard ``sock`` if settings say so; returns what was done (for the hooks and tests).

    ``address`` is the peer's sockaddr as the program gave it (or as accept
    returned it). ``fresh``: not connected yet, so ``guard``'s values for a
    socket without an RTT sample apply, derived once per settings instead of
    per connection (``guard`` itself reads TCP_INFO to find that out: tens of
    microseconds). Never raises: a connection the program asked for must not
    fail because protection could not be applied; that is logged as a warning.
    With ``settings.defend`` the options set stay peerwatch's when the program
    sets them again later (``defence``).
    """
    settings = state.current
    if settings is None:
        return "off"
    host = address[0] if isinstance(address, tuple) and address else None
    kind = classify(host)
    if kind == LOOPBACK and not settings.include_loopback:
        logger().debug("left alone (loopback): %s fd %d -> %s", how, sock.fileno(), host)
        return "loopback"
    defence.forget(sock)  # protecting again: our own options must reach the kernel
    try:
        result = _guard_fresh(sock, settings) if fresh else _guard(sock, settings)
    except (OSError, ValueError) as exc:
        logger().warning(
            "could not protect %s fd %d -> %s: %s",
            how,
            sock.fileno(),
            describe_peer(address),
            exc,
        )
        return "failed"
    if settings.defend:
        defence.keep(sock, result, describe_peer(address))
    level = 20 if result.complete else 30  # INFO, or WARNING when an option is missing
    log = logger()
    if not log.isEnabledFor(level):  # describe() is not free: only for a line someone reads
        return "protected"
    by_name = " (by name)" if kind == UNKNOWN else ""
    log.log(
        level,
        "protected %s fd %d -> %s%s: %s",
        how,
        sock.fileno(),
        describe_peer(address),
        by_name,
        result.describe(),
    )
    return "protected"


def _guard(sock: socket.socket, settings: ProtectSettings) -> GuardResult:
    from peerwatch.kernel.guarding import guard

    return guard(sock, settings.timeout, probes=settings.probes, idle_limit=settings.idle_limit)


_fresh_knobs: dict[ProtectSettings, KernelKnobs] = {}


def _guard_fresh(sock: socket.socket, settings: ProtectSettings) -> GuardResult:
    """What ``guard`` does to a socket not yet connected, with the values derived once."""
    from peerwatch.integrations.options import derived_knobs
    from peerwatch.kernel.guarding import FRESH_SOCKET_LEAD, GuardResult
    from peerwatch.kernel.knobs import apply_knobs

    knobs = _fresh_knobs.get(settings)
    if knobs is None:
        knobs = derived_knobs(
            settings.timeout, idle_limit=settings.idle_limit, probes=settings.probes
        )
        _fresh_knobs[settings] = knobs
    return GuardResult(
        timeout=settings.timeout,
        knobs=knobs,
        applied=apply_knobs(sock, knobs),
        retransmit_lead=round(min(FRESH_SOCKET_LEAD, settings.timeout / 2), 3),
    )
