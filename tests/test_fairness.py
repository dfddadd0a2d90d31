"""Companies take turns where they share a resource (`domain/fairness.py`); the expression pool,
the store's writer and the jobs client are tested where they live, with this underneath."""

from __future__ import annotations

import asyncio

import pytest

from workflowd.domain.fairness import FairSlots, TakeTurns


def test_lines_are_served_in_turn_each_in_its_order() -> None:
    turns: TakeTurns[str] = TakeTurns()
    for item in ("a1", "a2", "a3", "a4"):
        turns.push("a", item)
    turns.push("b", "b1")
    turns.push("c", "c1")
    turns.push("b", "b2")
    assert len(turns) == 7
    assert [turns.pop() for _ in range(7)] == ["a1", "b1", "c1", "a2", "b2", "a3", "a4"]
    with pytest.raises(IndexError):
        turns.pop()


async def test_a_freed_slot_goes_to_the_next_company_in_turn() -> None:
    slots = FairSlots(1)
    await slots.acquire("noisy")
    granted: list[str] = []

    async def wait(company: str, label: str) -> None:
        async with slots.slot(company):
            granted.append(label)

    waiting = [asyncio.create_task(wait("noisy", f"n{i}")) for i in range(5)]
    waiting.append(asyncio.create_task(wait("quiet", "q")))
    await asyncio.sleep(0)  # ok: yields the loop, no timing
    slots.release()
    await asyncio.gather(*waiting)
    assert granted == ["n0", "q", "n1", "n2", "n3", "n4"]


async def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    slots = FairSlots(1)
    await slots.acquire("a")
    first = asyncio.create_task(slots.acquire("a"))
    second = asyncio.create_task(slots.acquire("b"))
    await asyncio.sleep(0)  # ok: yields the loop, no timing
    slots.release()  # handed to `first`, which is cancelled before it runs
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 5)  # the slot went on to the next waiter
    waiting_then_cancelled = asyncio.create_task(slots.acquire("c"))
    await asyncio.sleep(0)  # ok: yields the loop, no timing
    waiting_then_cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting_then_cancelled
    slots.release()
    await asyncio.wait_for(slots.acquire("d"), 5)  # the cancelled waiter took nothing
