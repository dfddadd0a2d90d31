"""Sharing among companies: where several companies wait for one resource (the expression
workers, the store's writer and readers, the jobs API's connections), each company waits in its
own line and the lines are served in turn, so one company's backlog delays another's request by
at most one turn, not by the whole backlog.

`acting_for` names the company the current asyncio task works for: the API sets it for each
call, the launcher for each run's executor, the scheduler for each fire. Parts whose interface
carries no company (an expression evaluation, a store write) read it there; "" is the daemon's
own work, which waits in a line of its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Generic, TypeVar

T = TypeVar("T")

acting_for: ContextVar[str] = ContextVar("workflowd_acting_for", default="")


class TakeTurns(Generic[T]):
    """Items queued per company, taken one company at a time, in turn; each company's items in
    the order they came."""

    def __init__(self) -> None:
        # A dict keeps insertion order: the company served next is the first key, and a
        # company that still has items after its turn goes back to the end.
        self._lines: dict[str, deque[T]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, company: str, item: T) -> None:
        line = self._lines.get(company)
        if line is None:
            line = self._lines[company] = deque()
        line.append(item)
        self._size += 1

    def pop(self) -> T:
        """The next item in turn; IndexError when there is none."""
        if not self._lines:
            raise IndexError("no item is waiting")
        company = next(iter(self._lines))
        line = self._lines.pop(company)
        item = line.popleft()
        if line:
            self._lines[company] = line
        self._size -= 1
        return item


class FairSlots:
    """`size` slots shared by companies (a semaphore whose waiters take turns by company)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("at least one slot is needed")
        self._free = size
        self._waiting: TakeTurns[asyncio.Future[None]] = TakeTurns()

    @asynccontextmanager
    async def slot(self, company: str) -> AsyncIterator[None]:
        await self.acquire(company)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, company: str) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.push(company, turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed the slot as it was cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            turn = self._waiting.pop()
            if not turn.done():  # a waiter cancelled meanwhile left its future cancelled
                turn.set_result(None)
                return
        self._free += 1
