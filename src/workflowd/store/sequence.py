"""The sequence a company sees on its events.

Every event row gets its company's next number (`company_seq`) from a trigger as it is inserted
(`migrations.py`), in commit order. The `RunEvent`s a change returns were built as the rows went
in, with the log's own `global_seq`; before they leave the store they take their company's
number instead, read back in the same transaction, so what is published, stored and replayed
agrees. Only the replicas' follower reads the log's order (`reads.events_since`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from workflowd.domain.run import RunEvent
from workflowd.store.sql import Conn, marks

_CHUNK = 500


def as_company_sees(conn: Conn, events: Sequence[RunEvent]) -> list[RunEvent]:
    """`events`, just written in this transaction, with their company's sequence."""
    numbers: dict[int, int] = {}
    logged = [event.global_seq for event in events]
    for start in range(0, len(logged), _CHUNK):
        chunk = logged[start : start + _CHUNK]
        rows = conn.execute(
            "SELECT global_seq, company_seq FROM run_events"
            f" WHERE global_seq IN ({marks(len(chunk))})",
            chunk,
        ).fetchall()
        numbers.update((int(row["global_seq"]), int(row["company_seq"])) for row in rows)
    return [replace(event, global_seq=numbers[event.global_seq]) for event in events]
