"""Time, injected so tests and schedules never depend on the wall clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Protocol

# Long sleeps are cut into pieces so that a wall-clock change (NTP, a VM resumed) is noticed
# within this many seconds rather than after the whole original delay.
_MAX_SLEEP_S = 60.0


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep_until(self, instant: datetime) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, instant: datetime) -> None:
        """Returns at `instant` or up to a minute earlier: callers check the time again."""
        delay = (instant - self.now()).total_seconds()
        await asyncio.sleep(min(max(delay, 0.0), _MAX_SLEEP_S))
