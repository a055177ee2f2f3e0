"""Reconnect delays: exponential backoff with jitter, bounded by a total time budget.

Pure: the random source is passed in (``random.random`` in production, a fixed
sequence in tests). "Equal jitter" (AWS architecture blog, "Exponential Backoff
and Jitter", 2015): each delay is half its exponential step plus a random part
of the other half, so clients that lost their server together do not come back
together, and no delay collapses to zero the way full jitter allows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from peerwatch.errors import ConfigError


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.05  # first step, seconds
    maximum: float = 5.0  # largest step
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ConfigError(
                f"backoff needs 0 < initial <= maximum, got {self.initial} and {self.maximum}"
            )
        if self.factor < 1:
            raise ConfigError(f"backoff factor must be at least 1, got {self.factor}")

    def delays(self, budget: float, random: Callable[[], float]) -> Iterator[float]:
        """Delays before each reconnect attempt; their sum never exceeds ``budget`` seconds.

        The last delay is cut to what is left of the budget, so the final attempt
        happens at the end of ``resume_timeout``, not some step before it.
        """
        spent = 0.0
        step = self.initial
        while spent < budget:
            delay = min(step / 2 + random() * step / 2, budget - spent)
            spent += delay
            yield delay
            step = min(step * self.factor, self.maximum)
