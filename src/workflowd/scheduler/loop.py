"""The scheduler's loop: a heap of (next instant, workflow), one sleep until the earliest, never
a poll of every schedule.

The heap holds one live entry per schedule. Moving a schedule pushes a new entry and leaves the
old one in place, dead (lazy deletion: a heap cannot remove from its middle); setting an
unchanged instant pushes nothing; and once dead entries outnumber live ones the heap is rebuilt
from the live ones. So its size stays below twice the number of schedules whatever the callers
do (idempotent creates, repeated activations, a yearly cron whose dead entries would otherwise
wait a year to be popped).

The loop only knows when. What a fire does (the overlap and catch-up policies, the run, the
record of the decision) is the target's business, reached through `FireTarget`, which the
composition root hands in; the target answers with the schedule's next instant. The store is
the truth: an entry here is a hint, and a fire whose schedule moved on meanwhile (a new version,
another scheduler) is a no-op that returns where the schedule stands now.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

log = logging.getLogger("workflowd.scheduler")

_RETRY_AFTER = timedelta(seconds=5)


class FireTarget(Protocol):
    async def due(self) -> list[tuple[str, datetime]]:
        """Every active schedule and its next instant (at start)."""
        ...

    async def fire(self, workflow_id: str, instant: datetime) -> datetime | None:
        """Fire `instant` (or find it already fired) and return the next instant."""
        ...


class SchedulerClock(Protocol):
    def now(self) -> datetime: ...

    async def sleep_until(self, instant: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class _Entry:
    """Where a schedule stands in the loop: the instant it fires, when to wake for it (later
    than the instant for a retry), and the number of its one live heap entry."""

    instant: datetime
    wake_at: datetime
    number: int


class SchedulerLoop:
    def __init__(self, target: FireTarget, clock: SchedulerClock, concurrency: int = 256) -> None:
        self._target = target
        self._clock = clock
        # (wake at, entry number, workflow): the number orders equal times and tells a live
        # entry (the one `_next` holds) from a dead one.
        self._heap: list[tuple[datetime, int, str]] = []
        self._next: dict[str, _Entry] = {}
        self._pushed = 0
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        # The instant of each fire in flight, and of the one popped that waits for a slot.
        self._firing: dict[asyncio.Task[None], datetime] = {}
        self._waiting: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def scheduled(self) -> int:
        return len(self._next)

    def backlog(self, now: datetime) -> tuple[int, datetime | None]:
        """The instants that have come and are not fired yet (waiting for a fire slot, or
        firing), and the oldest of them. Zero, or the few fires in flight, while the daemon
        keeps up; when it cannot, the number that grows instead of hiding as lateness. One pass
        over the schedules: it is read when metrics are scraped, not per fire."""
        due = [e.instant for e in self._next.values() if e.wake_at <= now]
        due += self._firing.values()
        if self._waiting is not None:
            due.append(self._waiting)
        return len(due), min(due, default=None)

    @property
    def heap_size(self) -> int:
        """Entries in the heap, dead ones included (at most about twice `scheduled`)."""
        return len(self._heap)

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the scheduler loop is already started")
        for workflow_id, instant in await self._target.due():
            self.set(workflow_id, instant)
        self._task = asyncio.create_task(self._run(), name="scheduler")

    async def refresh(self) -> None:
        """Read every active schedule again (replicas: schedules activated, moved on or fired
        by another replica, or left due by one that died mid-fire). A schedule another replica
        fires as well is decided once: the store keeps one decision per instant."""
        for workflow_id, instant in await self._target.due():
            self.set(workflow_id, instant)

    def set(
        self, workflow_id: str, instant: datetime | None, wake_at: datetime | None = None
    ) -> None:
        """The workflow's next instant (None: it no longer fires). The same instant again
        changes nothing (a retry keeps its later wake-up)."""
        current = self._next.get(workflow_id)
        if instant is None:
            self._next.pop(workflow_id, None)
        elif current is None or current.instant != instant or wake_at is not None:
            self._pushed += 1
            wake = wake_at or instant
            self._next[workflow_id] = _Entry(instant, wake, self._pushed)
            heapq.heappush(self._heap, (wake, self._pushed, workflow_id))
        else:
            return
        if len(self._heap) > 2 * len(self._next) + 1:
            self._rebuild()
        self._wake.set()

    def _rebuild(self) -> None:
        """The heap of the live entries only (dead ones outnumbered them)."""
        self._heap = [(e.wake_at, e.number, wid) for wid, e in self._next.items()]
        heapq.heapify(self._heap)

    async def aclose(self) -> None:
        """Stop sleeping and wait for the fires in flight (each commits or does nothing)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._firing, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            due = self._pop_due()
            if due is not None:
                self._waiting = due[1]
                await self._slots.acquire()
                self._waiting = None
                task = asyncio.create_task(self._fire(*due))
                self._firing[task] = due[1]
                task.add_done_callback(self._firing.pop)
                continue
            await self._sleep()

    def _pop_due(self) -> tuple[str, datetime] | None:
        """The next entry whose time has come, dropping entries that were replaced."""
        now = self._clock.now()
        while self._heap:
            wake_at, number, workflow_id = self._heap[0]
            entry = self._next.get(workflow_id)
            if entry is None or entry.number != number:
                heapq.heappop(self._heap)  # replaced or removed since it was pushed
                continue
            if wake_at > now:
                return None
            heapq.heappop(self._heap)
            del self._next[workflow_id]
            return workflow_id, entry.instant
        return None

    async def _sleep(self) -> None:
        self._wake.clear()
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(self._wake.wait())]
        if self._heap:
            waits.append(asyncio.ensure_future(self._clock.sleep_until(self._heap[0][0])))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _fire(self, workflow_id: str, instant: datetime) -> None:
        try:
            following = await self._target.fire(workflow_id, instant)
        except Exception:
            log.exception(
                "schedule of workflow %s: firing %s failed; retrying", workflow_id, instant
            )
            if workflow_id not in self._next:
                self.set(workflow_id, instant, wake_at=self._clock.now() + _RETRY_AFTER)
        else:
            if workflow_id not in self._next:  # unless it was re-set while this fire ran
                self.set(workflow_id, following)
        finally:
            self._slots.release()
