"""``UNUSED``: the shared, empty stand-in for a queue nothing was ever put in.

In a module of its own because it subclasses ``collections.deque``, which a
mypyc-compiled class cannot (``PEERWATCH_COMPILE=1``, docs/BENCHMARKS.md): this
module always stays pure Python, the modules that use it may be compiled.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class _Unused(deque):  # type: ignore[type-arg]
    """An empty ``collections.deque`` allocates its first 64-slot block at once
    (760 bytes); an idle connection would pay that for each of its queues. Reads
    (``len``, truth, iteration) work on the stand-in; a write means a missing
    ``is UNUSED`` check and fails loudly instead of sharing data between queues.
    """

    def append(self, item: object) -> None:
        raise RuntimeError("write to the shared empty queue")

    appendleft = extend = extendleft = insert = append  # type: ignore[assignment]


#: See ``_Unused``.
UNUSED: deque[Any] = _Unused()
