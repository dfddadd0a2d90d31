"""Commits job changes with their events, a batch per transaction, so event ids follow commit
order.

Every change of a job record happens under `Journal.lock`, in one transaction of the job
journal (`store`, SQLite) per batch, and the event ids are the next integers after the last
committed one. Because ids are assigned and published under the lock, a stream that has seen id
N will never later be handed a smaller one. A completion is recorded after the DuckDB
transaction holding the job's effect and its proof (`proofs`) committed, so a crash between
the two commits leaves a proof that completes the job at the next start.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Sequence

import duckdb

from dataplane import store
from dataplane.hub import Event
from dataplane.model import Job

_PRUNE_EVERY = 1000


def rollback(cur: duckdb.DuckDBPyConnection) -> None:
    # DuckDB may already have ended a transaction that failed to commit.
    with contextlib.suppress(duckdb.TransactionException):
        cur.execute("ROLLBACK")


class Journal:
    def __init__(
        self,
        db: sqlite3.Connection,
        last_event_id: int,
        retain: int,
        publish: Callable[[list[Event]], None],
    ) -> None:
        self.lock = threading.Lock()
        self.db = db  # read and written under `lock` only
        self._last = last_event_id
        self._retain = max(retain, 1)
        self._publish = publish
        self._synced = True  # the connection's `synchronous` is FULL
        self._unsynced: list[str] = []  # proved completions not yet on disk for certain
        self._proved: list[str] = []  # proved completions on disk: their proofs may go

    def commit(
        self,
        jobs: Sequence[Job],
        *,
        digests: Sequence[str] | None = None,
        proved: bool = False,
        durable: bool = True,
    ) -> list[Event]:
        """Records `jobs` as changed (as new jobs when their `digests` are given) and commits,
        one event each, in order. The caller holds `lock`. `proved`: these are completions
        whose proofs committed with their effects. Without `durable` the commit is not synced
        to disk (it survives the process, not the machine): for changes that need not outlive
        a power loss, a job taken to run (it runs again) and a proved completion (its proof
        stays until a later durable commit has synced it, since the journal's file is written
        in order)."""
        if not jobs:
            return []
        first = self._last + 1
        events = [Event.of(first + index, job) for index, job in enumerate(jobs)]
        if durable != self._synced:
            self.db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._synced = durable
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if digests is None:
                store.update_jobs(self.db, events)
            else:
                store.insert_jobs(self.db, events, digests)
            store.append_changes(self.db, events)
            every = min(_PRUNE_EVERY, self._retain)
            if events[-1].event_id // every != (first - 1) // every:
                store.prune_changes(self.db, events[-1].event_id - self._retain)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        if proved:
            self._unsynced.extend(job.job_id for job in jobs)
        if durable:
            self._proved.extend(self._unsynced)
            self._unsynced.clear()
        self._last = events[-1].event_id
        self._publish(events)
        return events

    def sync(self) -> None:
        """Makes every commit so far durable: the journal's log is synced as it is copied into
        its file (a checkpoint). The caller holds `lock`."""
        self.db.execute("PRAGMA wal_checkpoint(FULL)")

    def take_proved(self, at_least: int) -> list[str]:
        """The jobs whose proofs the journal made redundant, once there are `at_least` of
        them (their proofs are then the caller's to forget). The caller holds `lock`."""
        if len(self._proved) < at_least:
            return []
        proved, self._proved = self._proved, []
        return proved
