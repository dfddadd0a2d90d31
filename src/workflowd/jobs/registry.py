"""Who awaits which job: job_id → futures, shared by every waiter of the client.

The stream, the poller and the reconciler only ever touch waiters through this table, so a
waiter's registration and its removal (on result, failure or cancellation) happen in one place.

A job just submitted needs no read of its own when the event stream was already live before
its `POST` was sent (`Watcher.live_since`): every change after that reaches the stream, and
the `POST`'s answer holds the state before it. What the stream tells of such a job before
anyone awaits it (its end may arrive before the `POST`'s answer) is kept a little while, in
bounds, for the waiter that follows; anything less certain is read (`mark_fresh`).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from workflowd.domain.jobs import JobInfo, JobState
from workflowd.jobs.errors import JobsError
from workflowd.jobs.parse import job_info_from_json

TERMINAL_STATES = frozenset(state.value for state in JobState if state.terminal)
# Ends of jobs nobody awaits yet: a few per submission in flight in practice; the bounds only
# matter when the stream also carries many jobs this client never awaits.
MAX_KEPT_ENDS = 4096
MAX_KEPT_END_CHARS = 8 * 1024 * 1024
MAX_SENT = 10_000

# A job's end as the stream sent it (its JSON, parsed only if a waiter comes) or as read.
_End = dict[str, Any] | JobInfo


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
        self._sending = 0
        # job_id → loop time its POST was sent, until its first waiter comes.
        self._sent: OrderedDict[str, float] = OrderedDict()
        # job_id → (loop time received, the end, its size) of ends nobody awaited yet.
        self._ends: OrderedDict[str, tuple[float, _End, int]] = OrderedDict()
        self._end_chars = 0
        # When the newest end let go for room was received: a job sent before it may have lost
        # its end that way, so it is read instead.
        self._ends_lost_at = float("-inf")

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._entries

    def ids(self) -> list[str]:
        return list(self._entries)

    @property
    def listening(self) -> bool:
        """Whether an event about a job may matter: someone awaits one, or may soon."""
        return bool(self._entries or self._sending or self._sent)

    def sending(self) -> None:
        """A job's POST is about to be sent; `sent` follows, whatever its outcome."""
        self._sending += 1

    def sent(self, since: float, info: JobInfo | None) -> None:
        """The POST sent at loop time `since` answered `info` (None: it failed)."""
        self._sending -= 1
        if info is None:
            return
        if info.state.terminal:  # e.g. an earlier submission's job, already ended
            if info.job_id in self._entries:
                self.observe(info)
            else:
                self._keep_end(info.job_id, info, since, 0)
        self._sent[info.job_id] = since
        self._sent.move_to_end(info.job_id)
        while len(self._sent) > MAX_SENT:
            self._sent.popitem(last=False)

    def keep_end(self, job_id: str, data: dict[str, Any], chars: int, now: float) -> None:
        """The stream told of the end of a job nobody awaits: keep it for a waiter to come."""
        if self._sending or job_id in self._sent:
            self._keep_end(job_id, data, now, chars)

    def _keep_end(self, job_id: str, end: _End, now: float, chars: int) -> None:
        old = self._ends.pop(job_id, None)
        if old is not None:
            self._end_chars -= old[2]
        self._ends[job_id] = (now, end, chars)
        self._end_chars += chars
        while len(self._ends) > MAX_KEPT_ENDS or self._end_chars > MAX_KEPT_END_CHARS:
            received, _, size = self._ends.popitem(last=False)[1]
            self._end_chars -= size
            self._ends_lost_at = received

    def add(
        self, job_id: str, now: float, live_since: float | None = None
    ) -> asyncio.Future[JobInfo]:
        """Register a waiter. `live_since`: since when the event stream has carried every
        change of this client's jobs (None: not known); see the module's docstring."""
        future: asyncio.Future[JobInfo] = asyncio.get_running_loop().create_future()
        sent = self._sent.pop(job_id, None)
        ended = self._ends.pop(job_id, None)
        if ended is not None:
            self._end_chars -= ended[2]
            info = _end_info(ended[1])
            if info is not None:
                future.set_result(info)
                return future
        entry = self._entries.get(job_id)
        if entry is None:
            entry = self._entries[job_id] = _Entry(since=now)
            streamed = (
                sent is not None
                and live_since is not None
                and live_since <= sent
                and self._ends_lost_at < sent
            )
            if not streamed:
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


def _end_info(end: _End) -> JobInfo | None:
    """A kept end as a job's state; None when it cannot be read (the job is read instead)."""
    if isinstance(end, JobInfo):
        return end
    try:
        return job_info_from_json(end)
    except JobsError:
        return None
