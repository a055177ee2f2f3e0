"""``shared(value)``: one object for each small number many connections hold alike.

A server's connections mostly run one configuration, and their peers announce the same
settings: each connection computing or decoding its own copy of the same float or int
(24-28 bytes each) was about 0.3 KiB of an idle connection (bench/mem_per_conn.py). Called
where a connection is set up, never per message. Bounded: past ``KEPT`` values, no sharing.
"""

from __future__ import annotations

from typing import TypeVar

#: How many distinct values are kept: a process has a handful of configurations.
KEPT = 1024

_Number = TypeVar("_Number", int, float)
# keyed by type too: 1 == 1.0, and a float must not come back as an int
_kept: dict[tuple[type, float], float] = {}


def shared(value: _Number) -> _Number:
    """``value``, as the one object kept for it (``value`` itself once ``KEPT`` are kept)."""
    key = (type(value), value)
    kept = _kept.get(key)
    if kept is None:
        if len(_kept) < KEPT:
            _kept[key] = value
        return value
    return kept  # type: ignore[return-value]  # the same type: the key says so
