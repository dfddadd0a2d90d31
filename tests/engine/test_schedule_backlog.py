"""A scheduler that fires slower than its schedules come due shows it: the number of instants
waiting and the oldest one's age as metrics, and each schedule's `overdue` in GetSchedule,
instead of lateness nobody sees until the runs come late."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from tests.conftest import Daemon
from tests.engine.schedule_support import T0, activate, at, create, get_schedule, scheduled
from tests.scheduler.manual_clock import ManualClock
from tests.test_observability import http_port, scrape
from workflowd.scheduler.loop import SchedulerLoop

MINUTE = timedelta(minutes=1)


async def test_get_schedule_says_how_long_an_unfired_instant_is_overdue(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    clock = ManualClock(T0)
    daemon = await start_daemon(clock=clock)
    wf = await create(daemon, scheduled("behind", "{cron: '*/5 * * * *'}"))
    await activate(daemon, wf.id)
    on_time = await get_schedule(daemon, wf.id)
    assert not on_time.HasField("overdue")
    assert (await scrape(http_port(daemon))).value("workflowd_schedule_backlog") == 0

    # A scheduler that cannot keep up, at its extreme: it fires nothing.
    loop = daemon.app.scheduler
    assert loop is not None
    await loop.aclose()
    clock.set(at(on_time.next_fire_at) + timedelta(seconds=90))

    behind = await get_schedule(daemon, wf.id)
    assert behind.next_fire_at == on_time.next_fire_at
    assert behind.overdue.ToTimedelta() == timedelta(seconds=90)
    behind_metrics = await scrape(http_port(daemon))
    assert behind_metrics.value("workflowd_schedule_backlog") == 1
    assert behind_metrics.value("workflowd_schedule_backlog_seconds") == 90


class _HeldFires:
    """A fire target whose fires wait until the test lets them end."""

    def __init__(self, due: list[tuple[str, datetime]]) -> None:
        self._due = due
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.first_started = asyncio.Event()
        self.fired: list[str] = []
        self.all_fired = asyncio.Event()

    async def due(self) -> list[tuple[str, datetime]]:
        return self._due

    async def fire(self, workflow_id: str, instant: datetime) -> datetime | None:
        self.started.append(workflow_id)
        self.first_started.set()
        await self.release.wait()
        self.fired.append(workflow_id)
        if len(self.fired) == len(self._due):
            self.all_fired.set()
        return instant + 1000 * MINUTE


async def test_the_backlog_counts_instants_waiting_for_a_slot_and_firing() -> None:
    clock = ManualClock(T0)
    due = [(f"wf{i}", T0 + (i + 1) * MINUTE) for i in range(3)]
    target = _HeldFires(due)
    loop = SchedulerLoop(target, clock, concurrency=1)
    await loop.start()
    try:
        assert loop.backlog(clock.now()) == (0, None)
        clock.set(T0 + 5 * MINUTE)
        await asyncio.wait_for(target.first_started.wait(), 60)
        # One firing, one popped and waiting for the only slot, one still in the heap.
        assert target.started == ["wf0"]
        assert loop.backlog(clock.now()) == (3, T0 + MINUTE)
        target.release.set()
        await asyncio.wait_for(target.all_fired.wait(), 60)
    finally:
        await loop.aclose()  # waits for the fires in flight
    assert target.fired == ["wf0", "wf1", "wf2"]
    assert loop.backlog(clock.now()) == (0, None)
