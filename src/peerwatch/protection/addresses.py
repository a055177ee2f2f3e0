"""Which peer address a connection goes to: loopback, elsewhere, or not known yet.

Loopback connections are left alone by default: the peer shares our kernel, so
it cannot vanish without the kernel resetting the connection. Parsed with
``inet_pton`` rather than ``ipaddress`` because this runs inside every
protected ``connect()`` and ``ipaddress`` costs a millisecond to import.
"""

from __future__ import annotations

import socket

#: Names that resolve to loopback on any sane host (``localhost`` per RFC 6761).
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_IPV6_LOOPBACK = bytes(15) + b"\x01"
_IPV4_MAPPED = bytes(10) + b"\xff\xff"

LOOPBACK = "loopback"
REMOTE = "remote"
UNKNOWN = "unknown"  # a host name: the address is known only once connected


def classify(host: object) -> str:
    """``LOOPBACK``, ``REMOTE`` or ``UNKNOWN`` (a name other than localhost) for a peer host."""
    if not isinstance(host, str):
        return UNKNOWN
    if host.lower().rstrip(".") in LOOPBACK_NAMES:
        return LOOPBACK
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        pass
    else:
        return LOOPBACK if packed[0] == 127 else REMOTE
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    except (OSError, ValueError):
        return UNKNOWN
    if packed == _IPV6_LOOPBACK or (packed[:12] == _IPV4_MAPPED and packed[12] == 127):
        return LOOPBACK
    return REMOTE


def describe_peer(address: object) -> str:
    """``host:port`` (``[v6]:port``) for a log line."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return repr(address)
