"""peerwatch: know whether the peer of a TCP connection is alive, and if not, why and since when.

The asyncio API is the front door::

    conn = await peerwatch.connect("db.internal", 9000, interval=1.0, timeout=5.0)
    await conn.send(b"hello")          # returns once the peer application has it
    try:
        reply = await conn.recv()
    except peerwatch.PeerDead as dead:
        print(dead.verdict.cause, dead.verdict.silent_for, dead.verdict.undelivered)

``peerwatch.sync`` offers the same with blocking calls. Names are imported
lazily, so ``import peerwatch`` loads neither asyncio nor the socket machinery
until they are used.
"""

from __future__ import annotations

#: typing.TYPE_CHECKING without importing typing (milliseconds at start-up; see protection/)
TYPE_CHECKING = False

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Config": "peerwatch.core.config",
    "Cause": "peerwatch.core.verdicts",
    "Verdict": "peerwatch.core.verdicts",
    "PeerwatchError": "peerwatch.errors",
    "ConfigError": "peerwatch.errors",
    "ProtocolError": "peerwatch.errors",
    "LocalProtocolError": "peerwatch.errors",
    "RemoteProtocolError": "peerwatch.errors",
    "ConnectionClosed": "peerwatch.errors",
    "PeerDead": "peerwatch.errors",
    "HandshakeFailed": "peerwatch.errors",
    "TcpInfo": "peerwatch.tcpinfo",
    "TcpState": "peerwatch.tcpinfo",
    "tcp_info": "peerwatch.tcpinfo",
    "KernelKnobs": "peerwatch.knobs",
    "knobs_for": "peerwatch.knobs",
    "apply_knobs": "peerwatch.knobs",
    "Connection": "peerwatch.aio.connection",
    "Delivery": "peerwatch.aio.connection",
    "connect": "peerwatch.aio.client",
    "serve": "peerwatch.aio.server",
    "Server": "peerwatch.aio.server",
    "guard": "peerwatch.guarding",
    "GuardResult": "peerwatch.guarding",
    "protect": "peerwatch.protection",
    "unprotect": "peerwatch.protection",
    "ProtectSettings": "peerwatch.protection",
    "check": "peerwatch.checking",
    "Checked": "peerwatch.checking",
    "assess": "peerwatch.assess_live",
    "socket_facts": "peerwatch.assess_live",
    "assess_info": "peerwatch.assess_rules",
    "Assessment": "peerwatch.assessment",
    "AssessPolicy": "peerwatch.assessment",
    "Status": "peerwatch.assessment",
    "Finding": "peerwatch.assessment",
    "SocketFacts": "peerwatch.assessment",
}

__all__ = [
    "AssessPolicy",
    "Assessment",
    "Cause",
    "Checked",
    "Config",
    "ConfigError",
    "Connection",
    "ConnectionClosed",
    "Delivery",
    "Finding",
    "GuardResult",
    "HandshakeFailed",
    "KernelKnobs",
    "LocalProtocolError",
    "PeerDead",
    "PeerwatchError",
    "ProtectSettings",
    "ProtocolError",
    "RemoteProtocolError",
    "Server",
    "SocketFacts",
    "Status",
    "TcpInfo",
    "TcpState",
    "Verdict",
    "apply_knobs",
    "assess",
    "assess_info",
    "check",
    "connect",
    "guard",
    "knobs_for",
    "protect",
    "serve",
    "socket_facts",
    "tcp_info",
    "unprotect",
]

if TYPE_CHECKING:
    from typing import Any

    from peerwatch.aio.client import connect
    from peerwatch.aio.connection import Connection, Delivery
    from peerwatch.aio.server import Server, serve
    from peerwatch.assess_live import assess, socket_facts
    from peerwatch.assess_rules import assess_info
    from peerwatch.assessment import Assessment, AssessPolicy, Finding, SocketFacts, Status
    from peerwatch.checking import Checked, check
    from peerwatch.core.config import Config
    from peerwatch.core.verdicts import Cause, Verdict
    from peerwatch.errors import (
        ConfigError,
        ConnectionClosed,
        HandshakeFailed,
        LocalProtocolError,
        PeerDead,
        PeerwatchError,
        ProtocolError,
        RemoteProtocolError,
    )
    from peerwatch.guarding import GuardResult, guard
    from peerwatch.knobs import KernelKnobs, apply_knobs, knobs_for
    from peerwatch.protection import ProtectSettings, protect, unprotect
    from peerwatch.tcpinfo import TcpInfo, TcpState, tcp_info


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'peerwatch' has no attribute {name!r}")
    import importlib  # here, not at the top: the protection bootstrap imports this package

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
