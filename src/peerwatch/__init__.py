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
    "QueueFull": "peerwatch.errors",
    "TcpInfo": "peerwatch.kernel.tcpinfo",
    "TcpState": "peerwatch.kernel.tcpinfo",
    "tcp_info": "peerwatch.kernel.tcpinfo",
    "KernelKnobs": "peerwatch.kernel.knobs",
    "knobs_for": "peerwatch.kernel.knobs",
    "apply_knobs": "peerwatch.kernel.knobs",
    "Connection": "peerwatch.aio.connection",
    "Delivery": "peerwatch.aio.handles",
    "ResumableConnection": "peerwatch.aio.resumable",
    "Outage": "peerwatch.aio.outages",
    "Farewell": "peerwatch.aio.outages",
    "Lost": "peerwatch.aio.outages",
    "Resumed": "peerwatch.aio.outages",
    "SessionEvent": "peerwatch.aio.outages",
    "connect": "peerwatch.aio.client",
    "serve": "peerwatch.aio.serving",
    "Server": "peerwatch.aio.server",
    "guard": "peerwatch.kernel.guarding",
    "GuardResult": "peerwatch.kernel.guarding",
    "protect": "peerwatch.protection",
    "unprotect": "peerwatch.protection",
    "ProtectSettings": "peerwatch.protection",
    "check": "peerwatch.assessment.checking",
    "Checked": "peerwatch.assessment.checking",
    "assess": "peerwatch.assessment.live",
    "socket_facts": "peerwatch.assessment.live",
    "assess_info": "peerwatch.assessment.rules",
    "Assessment": "peerwatch.assessment.model",
    "AssessPolicy": "peerwatch.assessment.model",
    "Status": "peerwatch.assessment.model",
    "Finding": "peerwatch.assessment.model",
    "SocketFacts": "peerwatch.assessment.model",
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
    "Farewell",
    "Finding",
    "GuardResult",
    "HandshakeFailed",
    "KernelKnobs",
    "LocalProtocolError",
    "Lost",
    "Outage",
    "PeerDead",
    "PeerwatchError",
    "ProtectSettings",
    "ProtocolError",
    "QueueFull",
    "RemoteProtocolError",
    "ResumableConnection",
    "Resumed",
    "Server",
    "SessionEvent",
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
    from peerwatch.aio.connection import Connection
    from peerwatch.aio.handles import Delivery
    from peerwatch.aio.outages import Farewell, Lost, Outage, Resumed, SessionEvent
    from peerwatch.aio.resumable import ResumableConnection
    from peerwatch.aio.server import Server
    from peerwatch.aio.serving import serve
    from peerwatch.assessment.checking import Checked, check
    from peerwatch.assessment.live import assess, socket_facts
    from peerwatch.assessment.model import Assessment, AssessPolicy, Finding, SocketFacts, Status
    from peerwatch.assessment.rules import assess_info
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
        QueueFull,
        RemoteProtocolError,
    )
    from peerwatch.kernel.guarding import GuardResult, guard
    from peerwatch.kernel.knobs import KernelKnobs, apply_knobs, knobs_for
    from peerwatch.kernel.tcpinfo import TcpInfo, TcpState, tcp_info
    from peerwatch.protection import ProtectSettings, protect, unprotect


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
