"""Run, task and event persistence (synchronous; runs on the store's threads).

Every state change goes through `RunTx`, which checks the move against the domain's transition
tables and the row's current state, and appends the matching `RunEvent` in the same transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from workflowd.domain.errors import AlreadyExists, NotFound
from workflowd.domain.json import Json
from workflowd.domain.page import Page
from workflowd.domain.run import (
    ACTIVE_RUN_STATUSES,
    NewRun,
    Problem,
    Run,
    RunEvent,
    RunEventType,
    RunFilter,
    RunStatus,
    RunTrigger,
    TaskRun,
    TaskStatus,
    WatchFilter,
)
from workflowd.store.codec import dump, load, parse_ts, parse_ts_required, ts
from workflowd.store.query import Select, keyset_page
from workflowd.store.runtx import RunTx

# SQLite binds at most 32,766 parameters per statement; a page holds at most 1,000 runs anyway.
_IN_CHUNK = 500


def create_run(conn: sqlite3.Connection, new: NewRun) -> tuple[Run, list[RunEvent], bool]:
    if new.idempotency_key:
        row = conn.execute(
            "SELECT id, input, version FROM runs"
            " WHERE company = ? AND workflow_id = ? AND idempotency_key = ?",
            (new.company, new.workflow_id, new.idempotency_key),
        ).fetchone()
        if row is not None:
            if load(row["input"]) != new.input or row["version"] != new.version:
                raise AlreadyExists(
                    f"idempotency key {new.idempotency_key!r} was used for run {row['id']} with a"
                    " different input or version: use a new key for a different run"
                )
            return get_run(conn, new.company, row["id"]), [], False
    run, events = insert_run(conn, new)
    return run, events, True


def insert_run(conn: sqlite3.Connection, new: NewRun) -> tuple[Run, list[RunEvent]]:
    """The run, PENDING with its tasks, and its RUN_CREATED event."""
    conn.execute(
        "INSERT INTO runs (id, company, workflow_id, namespace, name, version, status, trigger,"
        " input, created_at, scheduled_at, idempotency_key, after_run_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.id,
            new.company,
            new.workflow_id,
            new.namespace,
            new.name,
            new.version,
            RunStatus.PENDING.value,
            new.trigger.value,
            dump(new.input),
            ts(new.created_at),
            ts(new.scheduled_at),
            new.idempotency_key,
            new.after_run_id,
        ),
    )
    conn.executemany(
        "INSERT INTO tasks (run_id, idx, name, call, reference, status) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (new.id, t.index, t.name, t.call, t.reference, TaskStatus.PENDING.value)
            for t in new.tasks
        ],
    )
    tx = RunTx(conn, new.id, new.created_at)
    tx.created()
    events = tx.close()
    return get_run(conn, new.company, new.id), events


def get_run(conn: sqlite3.Connection, company: str, run_id: str) -> Run:
    row = conn.execute(
        "SELECT * FROM runs WHERE id = ? AND company = ?", (run_id, company)
    ).fetchone()
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return runs_of(conn, [row])[0]


def _run_from(row: sqlite3.Row, tasks: Sequence[sqlite3.Row]) -> Run:
    context = load(row["context"])
    return Run(
        id=row["id"],
        company=row["company"],
        workflow_id=row["workflow_id"],
        namespace=row["namespace"],
        name=row["name"],
        version=row["version"],
        status=RunStatus(row["status"]),
        trigger=RunTrigger(row["trigger"]),
        input=load(row["input"]),
        created_at=parse_ts_required(row["created_at"]),
        tasks=tuple(_task_from_row(t) for t in tasks),
        context=context if isinstance(context, dict) else {},
        output=load(row["output"]),
        error=_problem(row["error"]),
        started_at=parse_ts(row["started_at"]),
        ended_at=parse_ts(row["ended_at"]),
        scheduled_at=parse_ts(row["scheduled_at"]),
        idempotency_key=row["idempotency_key"],
        after_run_id=row["after_run_id"],
        cancel_reason=row["cancel_reason"],
    )


def _problem(raw: str | None) -> Problem | None:
    data = load(raw)
    return Problem.from_json(data) if isinstance(data, dict) else None


def _task_from_row(row: sqlite3.Row) -> TaskRun:
    return TaskRun(
        index=row["idx"],
        name=row["name"],
        call=row["call"],
        reference=row["reference"],
        status=TaskStatus(row["status"]),
        job_id=row["job_id"],
        input=load(row["input"]),
        output=load(row["output"]),
        error=_problem(row["error"]),
        started_at=parse_ts(row["started_at"]),
        ended_at=parse_ts(row["ended_at"]),
    )


def job_request(conn: sqlite3.Connection, run_id: str, index: int) -> Json:
    row = conn.execute(
        "SELECT job_request FROM tasks WHERE run_id = ? AND idx = ?", (run_id, index)
    ).fetchone()
    return None if row is None else load(row["job_request"])


def list_page(
    conn: sqlite3.Connection, company: str, filt: RunFilter, size: int, token: str
) -> Page[Run]:
    filter_key = "|".join(
        [
            company,
            filt.workflow_id,
            ",".join(sorted(filt.statuses)),
            str(ts(filt.created_after)),
            str(ts(filt.created_before)),
        ]
    )
    select = (
        Select("runs", "company = ?", company)
        .where_if(filt.workflow_id, "workflow_id = ?", filt.workflow_id)
        .where_in("status", (s.value for s in filt.statuses))
        .where_if(filt.created_after, "created_at > ?", ts(filt.created_after))
        .where_if(filt.created_before, "created_at < ?", ts(filt.created_before))
    )
    return keyset_page(conn, select, size, token, filter_key, lambda rows: runs_of(conn, rows))


def runs_of(conn: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[Run]:
    """The runs of these rows, their tasks read in one query for the lot."""
    ids = [row["id"] for row in rows]
    tasks: dict[str, list[sqlite3.Row]] = {run_id: [] for run_id in ids}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        found = conn.execute(
            f"SELECT * FROM tasks WHERE run_id IN ({', '.join('?' * len(chunk))})"
            " ORDER BY run_id, idx",
            chunk,
        )
        for task in found.fetchall():
            tasks[task["run_id"]].append(task)
    return [_run_from(row, tasks[row["id"]]) for row in rows]


def jobs_to_cancel(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(job id, company) of every job still to be cancelled."""
    rows = conn.execute(
        "SELECT j.job_id, r.company FROM jobs_to_cancel j JOIN runs r ON r.id = j.run_id"
        " ORDER BY j.since"
    )
    return [(r["job_id"], r["company"]) for r in rows.fetchall()]


def forget_job_to_cancel(conn: sqlite3.Connection, job_id: str) -> None:
    conn.execute("DELETE FROM jobs_to_cancel WHERE job_id = ?", (job_id,))


def active_run_ids(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    active = [s.value for s in ACTIVE_RUN_STATUSES]
    rows = conn.execute(
        f"SELECT company, id FROM runs WHERE status IN ({', '.join('?' * len(active))})"
        " ORDER BY seq",
        active,
    ).fetchall()
    return [(r["company"], r["id"]) for r in rows]


def events_after(
    conn: sqlite3.Connection, company: str, run_id: str, after_seq: int, limit: int
) -> list[RunEvent]:
    rows = conn.execute(
        "SELECT * FROM run_events WHERE run_id = ? AND company = ? AND seq > ?"
        " ORDER BY seq LIMIT ?",
        (run_id, company, after_seq, limit),
    ).fetchall()
    return [_event_from_row(r) for r in rows]


def events_after_global(
    conn: sqlite3.Connection, company: str, filt: WatchFilter, after: int, limit: int
) -> list[RunEvent]:
    select = (
        Select("run_events", "company = ? AND global_seq > ?", company, after)
        .where_if(filt.workflow_id, "workflow_id = ?", filt.workflow_id)
        .where_if(filt.namespace, "namespace = ?", filt.namespace)
        .where_in("run_status", (s.value for s in filt.statuses))
    )
    return [_event_from_row(r) for r in select.fetch(conn, "global_seq", limit)]


def _event_from_row(row: sqlite3.Row) -> RunEvent:
    return RunEvent(
        run_id=row["run_id"],
        seq=row["seq"],
        global_seq=row["global_seq"],
        type=RunEventType(row["type"]),
        time=parse_ts_required(row["time"]),
        company=row["company"],
        workflow_id=row["workflow_id"],
        namespace=row["namespace"],
        run_status=RunStatus(row["run_status"]),
        task_index=row["task_index"],
        task_name=row["task_name"],
        task_status=TaskStatus(row["task_status"]) if row["task_status"] else None,
        job_id=row["job_id"],
        error=_problem(row["error"]),
        reason=row["reason"],
    )


def last_global_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(global_seq) FROM run_events").fetchone()
    return int(row[0] or 0)
