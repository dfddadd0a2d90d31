"""A clock the test moves by hand: the scheduler sleeps on it, and wakes when the test
advances it past the instant it waits for. Real asyncio timers are untouched."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta


class ManualClock:
    def __init__(self, now: datetime | None = None) -> None:
        self._now = now or datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, instant: datetime) -> None:
        if instant <= self._now:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (instant, waiter)
        self._sleepers.append(entry)
        try:
            await waiter
        finally:
            self._sleepers.remove(entry)

    def advance(self, delta: timedelta) -> None:
        self.set(self._now + delta)

    def set(self, now: datetime) -> None:
        self._now = now
        for instant, waiter in self._sleepers:
            if instant <= now and not waiter.done():
                waiter.set_result(None)
