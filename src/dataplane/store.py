"""Job records and their change log: the company's job journal, a SQLite file beside its
DuckDB database.

The journal is small writes and point reads, which SQLite does in microseconds where DuckDB, an
analytical engine, takes a millisecond a statement. Every function takes the journal's
connection and runs inside whatever transaction the caller holds. A job's effect commits in
DuckDB with its proof (`proofs`), so the journal's record of a completion may lag the effect by
a crash: the proof settles it at the next start.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataplane.hub import Event
from dataplane.model import Failure, Job, JobState, JobType

SCHEMA_DDL = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, type TEXT NOT NULL, state TEXT NOT NULL, input TEXT NOT NULL,
    result TEXT, failures TEXT NOT NULL, idempotency_key TEXT, digest TEXT NOT NULL,
    tags TEXT NOT NULL, metadata TEXT NOT NULL, workflow_run_id TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, ended_at TEXT,
    last_event_id INTEGER NOT NULL, traceparent TEXT);
CREATE INDEX IF NOT EXISTS jobs_idempotency ON jobs (idempotency_key);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs (workflow_run_id);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE TABLE IF NOT EXISTS changes (
    event_id INTEGER PRIMARY KEY, job_id TEXT NOT NULL, type TEXT NOT NULL, tags TEXT NOT NULL,
    workflow_run_id TEXT, job TEXT NOT NULL);
"""


_JOB_COLUMNS = (
    "job_id, type, state, input, result, failures, idempotency_key, tags, metadata,"
    " created_at, updated_at, ended_at, traceparent"
)
ORDERINGS = {
    "created_at_asc": "created_at ASC, job_id",
    "created_at_desc": "created_at DESC, job_id",
    "updated_at_asc": "updated_at ASC, job_id",
    "updated_at_desc": "updated_at DESC, job_id",
}


class JournalUnusable(Exception):
    """The journal file cannot be opened (damaged, or not a SQLite file)."""


def open_journal(path: Path) -> sqlite3.Connection:
    """The journal's connection for writes, its tables created if new."""
    try:
        db = connect(path)
        try:
            db.executescript(SCHEMA_DDL)
        except BaseException:
            db.close()
            raise
    except sqlite3.Error as exc:
        raise JournalUnusable(f"the job journal {path.name}: {exc}") from exc
    return db


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the journal; commits are durable (WAL, synchronous=FULL) because a
    submission is acknowledged once it commits. Transactions are the caller's (BEGIN)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA busy_timeout = 10000")
    except BaseException:
        db.close()
        raise
    return db


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a listing or an event stream is about; empty fields match everything."""

    tag: str | None = None
    type: str | None = None
    workflow_run_id: str | None = None
    states: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()

    def matches(self, job: Job) -> bool:
        return (
            (self.tag is None or self.tag in job.tags)
            and (self.type is None or self.type == job.type.value)
            and (self.workflow_run_id in (None, job.metadata.get("workflow_run_id")))
            and (not self.states or job.state.value in self.states)
            and (not self.ids or job.job_id in self.ids)
        )

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = ["1"], list[Any]()
        for column, value in (("type", self.type), ("workflow_run_id", self.workflow_run_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.tag is not None:
            clauses.append("EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ?)")
            params.append(self.tag)
        for column, values in (("state", self.states), ("job_id", self.ids)):
            if values:
                clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        return " AND ".join(clauses), params


def insert_jobs(db: sqlite3.Connection, events: Sequence[Event], digests: Sequence[str]) -> None:
    db.executemany(
        "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                e.job.job_id, e.job.type.value, e.job.state.value, json.dumps(e.job.input),
                _dump(e.job.result), _failures(e.job), e.job.idempotency_key, digest,
                json.dumps(e.job.tags), json.dumps(e.job.metadata),
                e.job.metadata.get("workflow_run_id"), e.job.created_at, e.job.updated_at,
                e.job.ended_at, e.event_id, e.job.traceparent,
            )
            for e, digest in zip(events, digests, strict=True)
        ],
    )  # fmt: skip


def update_jobs(db: sqlite3.Connection, events: Sequence[Event]) -> None:
    db.executemany(
        "UPDATE jobs SET state = ?, result = ?, failures = ?, updated_at = ?, ended_at = ?,"
        " last_event_id = ? WHERE job_id = ?",
        [
            (
                e.job.state.value, _dump(e.job.result), _failures(e.job), e.job.updated_at,
                e.job.ended_at, e.event_id, e.job.job_id,
            )
            for e in events
        ],
    )  # fmt: skip


def append_changes(db: sqlite3.Connection, events: Sequence[Event]) -> None:
    db.executemany(
        "INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                e.event_id, e.job.job_id, e.job.type.value, json.dumps(e.job.tags),
                e.job.metadata.get("workflow_run_id"), e.data,
            )
            for e in events
        ],
    )  # fmt: skip


def prune_changes(db: sqlite3.Connection, keep_after: int) -> None:
    db.execute("DELETE FROM changes WHERE event_id <= ?", [keep_after])


def get_job(db: sqlite3.Connection, job_id: str) -> tuple[Job, int] | None:
    """The job and the id of the event that recorded its current state."""
    row = db.execute(
        f"SELECT {_JOB_COLUMNS}, last_event_id FROM jobs WHERE job_id = ?", [job_id]
    ).fetchone()
    return (_job(row), int(row[-1])) if row else None


def get_jobs(db: sqlite3.Connection, job_ids: Sequence[str]) -> dict[str, Job]:
    if not job_ids:
        return {}
    marks = ", ".join("?" * len(job_ids))
    rows = db.execute(
        f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id IN ({marks})", list(job_ids)
    ).fetchall()
    return {str(row[0]): _job(row) for row in rows}


def find_by_keys(db: sqlite3.Connection, keys: Sequence[str]) -> dict[str, tuple[Job, str]]:
    """The jobs submitted under these idempotency keys, with their submissions' digests."""
    if not keys:
        return {}
    marks = ", ".join("?" * len(keys))
    rows = db.execute(
        f"SELECT {_JOB_COLUMNS}, digest FROM jobs WHERE idempotency_key IN ({marks})",
        list(keys),
    ).fetchall()
    return {str(row[6]): (_job(row), str(row[-1])) for row in rows}


def list_jobs(
    db: sqlite3.Connection, where: JobFilter, order_by: str, limit: int, offset: int
) -> tuple[list[Job], int]:
    clause, params = where.where()
    total = db.execute(f"SELECT count(*) FROM jobs WHERE {clause}", params).fetchone()
    rows = db.execute(
        f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {clause}"
        f" ORDER BY {ORDERINGS[order_by]} LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    return [_job(row) for row in rows], int(total[0]) if total else 0


def unfinished(db: sqlite3.Connection) -> list[Job]:
    rows = db.execute(
        f"SELECT {_JOB_COLUMNS} FROM jobs"
        " WHERE state IN ('pending', 'running', 'pending_cancellation') ORDER BY created_at"
    ).fetchall()
    return [_job(row) for row in rows]


def changes_after(
    db: sqlite3.Connection, after: int, where: JobFilter, limit: int
) -> list[tuple[int, str]]:
    """Stored changes with an id above `after`, as (event id, job JSON text)."""
    clause, params = where.where()
    rows = db.execute(
        f"SELECT event_id, job FROM changes WHERE event_id > ? AND {clause}"
        " ORDER BY event_id LIMIT ?",
        [after, *params, limit],
    ).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


def event_id_range(db: sqlite3.Connection) -> tuple[int, int]:
    """(oldest, newest) retained event id; (0, 0) when nothing was ever recorded."""
    row = db.execute("SELECT min(event_id), max(event_id) FROM changes").fetchone()
    if not row or row[0] is None:
        return 0, 0
    return int(row[0]), int(row[1])


def _dump(value: object) -> str | None:
    return None if value is None else json.dumps(value)


def _failures(job: Job) -> str:
    return json.dumps([f.to_json() for f in job.failures])


def _job(row: Sequence[Any]) -> Job:
    return Job(
        job_id=row[0],
        type=JobType(row[1]),
        state=JobState(row[2]),
        input=json.loads(row[3]),
        result=json.loads(row[4]) if row[4] is not None else None,
        failures=tuple(Failure(**f) for f in json.loads(row[5])),
        idempotency_key=row[6],
        tags=tuple(json.loads(row[7])),
        metadata=json.loads(row[8]),
        created_at=row[9],
        updated_at=row[10],
        ended_at=row[11],
        traceparent=row[12],
    )
