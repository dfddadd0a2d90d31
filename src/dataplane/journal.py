"""Commits job changes with their event, one at a time, so event ids follow commit order.

Every change of a job record happens under `Journal.lock`: the record, its change-log row and
(for a completion) the job's effect commit in one DuckDB transaction, and the event id is the
next integer after the last committed one. Because ids are assigned and published under the
lock, a stream that has seen id N will never later be handed a smaller one.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

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
    def __init__(self, last_event_id: int, retain: int, publish: Callable[[Event], None]) -> None:
        self.lock = threading.Lock()
        self._last = last_event_id
        self._retain = max(retain, 1)
        self._publish = publish

    def commit(
        self,
        cur: duckdb.DuckDBPyConnection,
        job: Job,
        *,
        digest: str | None = None,
        in_transaction: bool = False,
    ) -> Event:
        """Record `job` as changed and commit. The caller holds `lock`; with `in_transaction`
        it has already begun the transaction (holding the job's effect)."""
        if not in_transaction:
            cur.execute("BEGIN")
        event = Event.of(self._last + 1, job)
        try:
            if digest is None:
                store.update_job(cur, job, event.event_id)
            else:
                store.insert_job(cur, job, digest, event.event_id)
            store.append_change(cur, event.event_id, job, event.data)
            if event.event_id % min(_PRUNE_EVERY, self._retain) == 0:
                store.prune_changes(cur, event.event_id - self._retain)
            cur.execute("COMMIT")
        except BaseException:
            rollback(cur)
            raise
        self._last = event.event_id
        self._publish(event)
        return event
