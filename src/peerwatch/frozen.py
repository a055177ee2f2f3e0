"""Build a frozen dataclass instance from a dict of its fields, without its ``__init__``.

A frozen dataclass's generated ``__init__`` sets each field with
``object.__setattr__``, one Python-level call per field: for ``TcpInfo`` (60 fields)
that was two thirds of parsing it, and ``peerwatch inspect`` / ``exporter`` build a
``TcpInfo``, a ``SockRecord``, a ``SocketFacts`` and an ``Assessment`` for each of
10,000 sockets. Handing the instance its ``__dict__`` at once gives the same object
(equal, hashable, immutable through normal assignment) in a fraction of the time.

Only for dataclasses without ``__post_init__`` checks and without ``slots``; a field
left out reads its class default (every such field must have one).
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["build"]

T = TypeVar("T")


def build(cls: type[T], fields: dict[str, object]) -> T:
    """An instance of ``cls`` whose attributes are ``fields`` (the dict is taken, not copied)."""
    instance = object.__new__(cls)
    object.__setattr__(instance, "__dict__", fields)
    return instance
