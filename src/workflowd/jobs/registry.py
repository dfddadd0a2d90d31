"""Who awaits which job: job_id → futures, shared by every waiter of the client.

The stream, the poller and the reconciler only ever touch waiters through this table, so a
waiter's registration and its removal (on result, failure or cancellation) happen in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from workflowd.domain.jobs import JobInfo, JobState


@dataclass(slots=True)
class _Entry:
    since: float  # loop time the job was first awaited: the start of its outage clock
    futures: list[asyncio.Future[JobInfo]] = field(default_factory=list)
    last_state: JobState | None = None


class WaiterRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        # Jobs whose state must be (re-)read because no event may ever tell it: just awaited,
        # or awaited across a gap in the stream.
        self._fresh: set[str] = set()
        self.fresh_added = asyncio.Event()
        self.nonempty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._entries

    def ids(self) -> list[str]:
        return list(self._entries)

    def add(self, job_id: str, now: float) -> asyncio.Future[JobInfo]:
        future: asyncio.Future[JobInfo] = asyncio.get_running_loop().create_future()
        entry = self._entries.get(job_id)
        if entry is None:
            entry = self._entries[job_id] = _Entry(since=now)
            self.mark_fresh((job_id,))
            self.nonempty.set()
        entry.futures.append(future)
        return future

    def discard(self, job_id: str, future: asyncio.Future[JobInfo]) -> None:
        entry = self._entries.get(job_id)
        if entry is None:
            return
        if future in entry.futures:
            entry.futures.remove(future)
        if not entry.futures:
            self._drop(job_id)

    def observe(self, info: JobInfo) -> bool:
        """Record a job's state; resolve its waiters if terminal. True when the state moved."""
        entry = self._entries.get(info.job_id)
        if entry is None:
            return False
        changed = entry.last_state != info.state
        entry.last_state = info.state
        if info.state.terminal:
            self._drop(info.job_id)
            for future in entry.futures:
                if not future.done():
                    future.set_result(info)
        return changed

    def fail(self, job_id: str, error: BaseException) -> None:
        entry = self._entries.get(job_id)
        if entry is None:
            return
        self._drop(job_id)
        for future in entry.futures:
            if not future.done():
                future.set_exception(error)

    def fail_all(self, make_error: Callable[[], BaseException]) -> None:
        for job_id in list(self._entries):
            self.fail(job_id, make_error())

    def fail_awaited_since(self, cutoff: float, make_error: Callable[[], BaseException]) -> int:
        """Fail the jobs awaited since `cutoff` or earlier; returns how many."""
        stale = [job_id for job_id, entry in self._entries.items() if entry.since <= cutoff]
        for job_id in stale:
            self.fail(job_id, make_error())
        return len(stale)

    def mark_fresh(self, job_ids: Iterable[str]) -> None:
        before = len(self._fresh)
        self._fresh.update(job_id for job_id in job_ids if job_id in self._entries)
        if len(self._fresh) > before:
            self.fresh_added.set()

    def mark_all_fresh(self) -> None:
        self.mark_fresh(self._entries)

    def take_fresh(self) -> list[str]:
        fresh, self._fresh = list(self._fresh), set()
        self.fresh_added.clear()
        return fresh

    def _drop(self, job_id: str) -> None:
        del self._entries[job_id]
        self._fresh.discard(job_id)
        if not self._entries:
            self.nonempty.clear()
