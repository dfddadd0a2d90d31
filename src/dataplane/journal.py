"""Commits job changes with their events, a batch per transaction, so event ids follow commit
order.

Every change of a job record happens under `Journal.lock`: the records, their change-log rows
and (for completions) the jobs' effects commit in one DuckDB transaction, and the event ids are
the next integers after the last committed one. Because ids are assigned and published under
the lock, a stream that has seen id N will never later be handed a smaller one. A batch of changes
costs one commit and two statements whatever its size, which is what lets trivial jobs go
faster than a commit per change.
"""

from __future__ import annotations

import contextlib
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
        self, last_event_id: int, retain: int, publish: Callable[[list[Event]], None]
    ) -> None:
        self.lock = threading.Lock()
        self._last = last_event_id
        self._retain = max(retain, 1)
        self._publish = publish
        self._prune_due = False

    def commit(
        self,
        cur: duckdb.DuckDBPyConnection,
        jobs: Sequence[Job],
        *,
        digests: Sequence[str] | None = None,
        in_transaction: bool = False,
    ) -> list[Event]:
        """Records `jobs` as changed (as new jobs when their `digests` are given) and commits,
        one event each, in order. The caller holds `lock`; with `in_transaction` it has
        already begun the transaction (holding the jobs' effects)."""
        if not jobs:
            return []
        if not in_transaction:
            cur.execute("BEGIN")
        first = self._last + 1
        events = [Event.of(first + index, job) for index, job in enumerate(jobs)]
        try:
            if digests is None:
                store.update_jobs(cur, events)
            else:
                store.insert_jobs(cur, events, digests)
            store.append_changes(cur, events)
            every = min(_PRUNE_EVERY, self._retain)
            self._prune_due |= events[-1].event_id // every != (first - 1) // every
            # Never alongside effects: their transaction began earlier, and deleting rows that
            # a newer transaction already pruned would fail it with a conflict.
            if self._prune_due and not in_transaction:
                store.prune_changes(cur, events[-1].event_id - self._retain)
                self._prune_due = False
            cur.execute("COMMIT")
        except BaseException:
            rollback(cur)
            raise
        self._last = events[-1].event_id
        self._publish(events)
        return events
