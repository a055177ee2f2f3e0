"""The server memory budget: growth past the limit ends holders until the sum fits again."""

from __future__ import annotations

from peerwatch.core.budget import MemoryBudget


def test_growth_within_the_limit_ends_nobody() -> None:
    ended: list[int] = []
    budget = MemoryBudget(100, lambda: bool(ended.append(1)))
    budget.charge(60)
    budget.charge(40)
    assert budget.used == 100 and ended == []


def test_growth_past_the_limit_ends_holders_until_it_fits() -> None:
    holders = [70, 50, 30]  # what each connection holds, largest first
    budget = MemoryBudget(100, lambda: False)

    def end_largest() -> bool:
        if not holders:
            return False
        budget.charge(-holders.pop(0))  # a connection ended refunds its holding
        return True

    budget._on_exceeded = end_largest
    for held in (30, 50, 70):
        budget.charge(held)
    assert holders == [50, 30] and budget.used == 80


def test_release_never_ends_anyone_even_while_over() -> None:
    calls: list[int] = []
    budget = MemoryBudget(10, lambda: bool(calls.append(1)))  # ends nobody: returns False
    budget.charge(50)
    assert calls == [1] and budget.used == 50  # nothing left to end: stays over, no loop
    budget.charge(-5)
    assert calls == [1] and budget.used == 45
