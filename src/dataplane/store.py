"""Job records and their change log, kept in the company's own DuckDB database.

Every function takes a cursor and runs inside whatever transaction the caller holds: that is
what lets a job's completion commit together with its effect. Internal tables live in schema
`_dataplane`, apart from `company_data`, so they never show up as datasets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from dataplane.hub import Event
from dataplane.model import Failure, Job, JobState, JobType

SCHEMA_DDL = """
CREATE SCHEMA IF NOT EXISTS company_data;
CREATE SCHEMA IF NOT EXISTS _dataplane;
CREATE TABLE IF NOT EXISTS _dataplane.jobs (
    job_id VARCHAR PRIMARY KEY, type VARCHAR NOT NULL, state VARCHAR NOT NULL,
    input VARCHAR NOT NULL, result VARCHAR, failures VARCHAR NOT NULL,
    idempotency_key VARCHAR, digest VARCHAR NOT NULL, tags VARCHAR[] NOT NULL,
    metadata VARCHAR NOT NULL, workflow_run_id VARCHAR, created_at VARCHAR NOT NULL,
    updated_at VARCHAR NOT NULL, ended_at VARCHAR, last_event_id BIGINT NOT NULL);
ALTER TABLE _dataplane.jobs ADD COLUMN IF NOT EXISTS traceparent VARCHAR;
CREATE INDEX IF NOT EXISTS jobs_idempotency ON _dataplane.jobs (idempotency_key);
CREATE INDEX IF NOT EXISTS jobs_run ON _dataplane.jobs (workflow_run_id);
CREATE TABLE IF NOT EXISTS _dataplane.changes (
    event_id BIGINT NOT NULL, job_id VARCHAR NOT NULL, type VARCHAR NOT NULL,
    tags VARCHAR[] NOT NULL, workflow_run_id VARCHAR, job VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS _dataplane.datasets (
    dataset_id BIGINT NOT NULL, name VARCHAR NOT NULL, kind VARCHAR NOT NULL,
    query VARCHAR, options VARCHAR NOT NULL, created_at VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS _dataplane.snapshots (
    dataset_id BIGINT NOT NULL, snapshot_id BIGINT NOT NULL, recalculation_id VARCHAR NOT NULL,
    created_at VARCHAR NOT NULL, row_count BIGINT NOT NULL);
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
        clauses, params = ["TRUE"], list[Any]()
        for column, value in (("type", self.type), ("workflow_run_id", self.workflow_run_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.tag is not None:
            clauses.append("list_contains(tags, ?)")
            params.append(self.tag)
        for column, values in (("state", self.states), ("job_id", self.ids)):
            if values:
                clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        return " AND ".join(clauses), params


# Batches are written as one list per column, unnested: a statement costs the same for one
# row or a hundred, while a multi-row VALUES costs a bind per value (three times as much for a
# batch of 32).
_JOB_TYPES = (
    "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR",
    "VARCHAR[]", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "BIGINT", "VARCHAR",
)  # fmt: skip
_CHANGE_TYPES = ("BIGINT", "VARCHAR", "VARCHAR", "VARCHAR[]", "VARCHAR", "VARCHAR")
_UPDATED = ("job_id", "state", "result", "failures", "updated_at", "ended_at", "last_event_id")
_UPDATED_TYPES = ("VARCHAR",) * 6 + ("BIGINT",)


def _unnest(types: Sequence[str], names: Sequence[str] = ()) -> str:
    """A select list unnesting one typed list parameter per column."""
    aliases = [f" AS {name}" for name in names] or [""] * len(types)
    return ", ".join(
        f"unnest(${i}::{kind}[]){alias}"
        for i, (kind, alias) in enumerate(zip(types, aliases, strict=True), start=1)
    )


def _columns(rows: list[list[Any]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


def insert_jobs(
    cur: duckdb.DuckDBPyConnection, events: Sequence[Event], digests: Sequence[str]
) -> None:
    rows = [
        [
            e.job.job_id, e.job.type.value, e.job.state.value, json.dumps(e.job.input),
            _dump(e.job.result), _failures(e.job), e.job.idempotency_key, digest,
            list(e.job.tags), json.dumps(e.job.metadata), e.job.metadata.get("workflow_run_id"),
            e.job.created_at, e.job.updated_at, e.job.ended_at, e.event_id, e.job.traceparent,
        ]
        for e, digest in zip(events, digests, strict=True)
    ]  # fmt: skip
    cur.execute(f"INSERT INTO _dataplane.jobs SELECT {_unnest(_JOB_TYPES)}", _columns(rows))


def update_jobs(cur: duckdb.DuckDBPyConnection, events: Sequence[Event]) -> None:
    rows = [
        [
            e.job.job_id, e.job.state.value, _dump(e.job.result), _failures(e.job),
            e.job.updated_at, e.job.ended_at, e.event_id,
        ]
        for e in events
    ]  # fmt: skip
    cur.execute(
        "UPDATE _dataplane.jobs AS j SET state = v.state, result = v.result,"
        " failures = v.failures, updated_at = v.updated_at, ended_at = v.ended_at,"
        f" last_event_id = v.last_event_id FROM (SELECT {_unnest(_UPDATED_TYPES, _UPDATED)})"
        " AS v WHERE j.job_id = v.job_id",
        _columns(rows),
    )


def append_changes(cur: duckdb.DuckDBPyConnection, events: Sequence[Event]) -> None:
    rows = [
        [
            e.event_id, e.job.job_id, e.job.type.value, list(e.job.tags),
            e.job.metadata.get("workflow_run_id"), e.data,
        ]
        for e in events
    ]  # fmt: skip
    cur.execute(f"INSERT INTO _dataplane.changes SELECT {_unnest(_CHANGE_TYPES)}", _columns(rows))


def prune_changes(cur: duckdb.DuckDBPyConnection, keep_after: int) -> None:
    cur.execute("DELETE FROM _dataplane.changes WHERE event_id <= ?", [keep_after])


def get_job(cur: duckdb.DuckDBPyConnection, job_id: str) -> tuple[Job, int] | None:
    """The job and the id of the event that recorded its current state."""
    row = cur.execute(
        f"SELECT {_JOB_COLUMNS}, last_event_id FROM _dataplane.jobs WHERE job_id = ?", [job_id]
    ).fetchone()
    return (_job(row), int(row[-1])) if row else None


def get_jobs(cur: duckdb.DuckDBPyConnection, job_ids: Sequence[str]) -> dict[str, Job]:
    if not job_ids:
        return {}
    marks = ", ".join("?" * len(job_ids))
    rows = cur.execute(
        f"SELECT {_JOB_COLUMNS} FROM _dataplane.jobs WHERE job_id IN ({marks})", list(job_ids)
    ).fetchall()
    return {str(row[0]): _job(row) for row in rows}


def find_by_keys(cur: duckdb.DuckDBPyConnection, keys: Sequence[str]) -> dict[str, tuple[Job, str]]:
    """The jobs submitted under these idempotency keys, with their submissions' digests."""
    if not keys:
        return {}
    marks = ", ".join("?" * len(keys))
    rows = cur.execute(
        f"SELECT {_JOB_COLUMNS}, digest FROM _dataplane.jobs WHERE idempotency_key IN ({marks})",
        list(keys),
    ).fetchall()
    return {str(row[6]): (_job(row), str(row[-1])) for row in rows}


def list_jobs(
    cur: duckdb.DuckDBPyConnection, where: JobFilter, order_by: str, limit: int, offset: int
) -> tuple[list[Job], int]:
    clause, params = where.where()
    total = cur.execute(f"SELECT count(*) FROM _dataplane.jobs WHERE {clause}", params).fetchone()
    rows = cur.execute(
        f"SELECT {_JOB_COLUMNS} FROM _dataplane.jobs WHERE {clause}"
        f" ORDER BY {ORDERINGS[order_by]} LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    return [_job(row) for row in rows], int(total[0]) if total else 0


def unfinished(cur: duckdb.DuckDBPyConnection) -> list[Job]:
    rows = cur.execute(
        f"SELECT {_JOB_COLUMNS} FROM _dataplane.jobs"
        " WHERE state IN ('pending', 'running', 'pending_cancellation') ORDER BY created_at"
    ).fetchall()
    return [_job(row) for row in rows]


def changes_after(
    cur: duckdb.DuckDBPyConnection, after: int, where: JobFilter, limit: int
) -> list[tuple[int, str]]:
    """Stored changes with an id above `after`, as (event id, job JSON text)."""
    clause, params = where.where()
    rows = cur.execute(
        f"SELECT event_id, job FROM _dataplane.changes WHERE event_id > ? AND {clause}"
        " ORDER BY event_id LIMIT ?",
        [after, *params, limit],
    ).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


def event_id_range(cur: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(oldest, newest) retained event id; (0, 0) when nothing was ever recorded."""
    row = cur.execute("SELECT min(event_id), max(event_id) FROM _dataplane.changes").fetchone()
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
        tags=tuple(row[7]),
        metadata=json.loads(row[8]),
        created_at=row[9],
        updated_at=row[10],
        ended_at=row[11],
        traceparent=row[12],
    )
