"""Run, task and event persistence (synchronous; runs on the store's threads).

Every state change goes through `RunTx`, which checks the move against the domain's transition
tables and the row's current state, and appends the matching `RunEvent` in the same transaction.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from workflowd.domain.errors import AlreadyExists, NotFound
from workflowd.domain.json import Json, JsonObject
from workflowd.domain.page import Page
from workflowd.domain.run import (
    RUN_EVENT_FOR,
    TASK_EVENT_FOR,
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
    transition_run,
    transition_task,
)
from workflowd.store.codec import dump, load, parse_ts, parse_ts_required, ts
from workflowd.store.paging import decode_token, encode_token


class RunTx:
    """The changes to one run inside one transaction."""

    def __init__(self, conn: sqlite3.Connection, run_id: str, now: datetime) -> None:
        row = conn.execute(
            "SELECT company, workflow_id, namespace, status, last_seq FROM runs WHERE id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"run {run_id} not found")
        self._conn = conn
        self._run_id = run_id
        self._now = now
        self._company = row["company"]
        self._workflow_id = row["workflow_id"]
        self._namespace = row["namespace"]
        self.run_status = RunStatus(row["status"])
        self._seq = int(row["last_seq"])
        self.events: list[RunEvent] = []

    @property
    def now(self) -> datetime:
        return self._now

    def task_status(self, index: int) -> TaskStatus:
        row = self._conn.execute(
            "SELECT status FROM tasks WHERE run_id = ? AND idx = ?", (self._run_id, index)
        ).fetchone()
        if row is None:
            raise NotFound(f"run {self._run_id} has no task {index}")
        return TaskStatus(row["status"])

    def set_run_status(self, status: RunStatus, **fields: Any) -> None:
        transition_run(self.run_status, status)
        self.run_status = status
        self._update("runs", "id = ?", (self._run_id,), {"status": status.value, **fields})
        error = fields.get("error")
        self._event(RUN_EVENT_FOR[status], error=Problem.from_json(error) if error else None)

    def set_task_status(self, index: int, name: str, status: TaskStatus, **fields: Any) -> None:
        transition_task(self.task_status(index), status)
        self._update(
            "tasks",
            "run_id = ? AND idx = ?",
            (self._run_id, index),
            {"status": status.value, **fields},
        )
        error = fields.get("error")
        self._event(
            TASK_EVENT_FOR[status],
            task_index=index,
            task_name=name,
            task_status=status,
            job_id=str(fields.get("job_id", "")),
            error=Problem.from_json(error) if error else None,
        )

    def set_job_id(self, index: int, name: str, job_id: str) -> None:
        if self.task_status(index) != TaskStatus.RUNNING:
            return
        self._update("tasks", "run_id = ? AND idx = ?", (self._run_id, index), {"job_id": job_id})
        self._event(
            RunEventType.TASK_JOB_SUBMITTED,
            task_index=index,
            task_name=name,
            task_status=TaskStatus.RUNNING,
            job_id=job_id,
        )

    def set_context(self, context: JsonObject) -> None:
        self._update("runs", "id = ?", (self._run_id,), {"context": context})

    def _update(self, table: str, where: str, key: tuple[Any, ...], fields: dict[str, Any]) -> None:
        cols = ", ".join(f"{name} = ?" for name in fields)
        values = [_column_value(name, v) for name, v in fields.items()]
        self._conn.execute(f"UPDATE {table} SET {cols} WHERE {where}", (*values, *key))

    def _event(self, kind: RunEventType, **fields: Any) -> None:
        self._seq += 1
        error: Problem | None = fields.pop("error", None)
        cur = self._conn.execute(
            "INSERT INTO run_events (run_id, seq, company, workflow_id, namespace, type, time,"
            " run_status, task_index, task_name, task_status, job_id, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._run_id,
                self._seq,
                self._company,
                self._workflow_id,
                self._namespace,
                kind.value,
                ts(self._now),
                self.run_status.value,
                fields.get("task_index", -1),
                fields.get("task_name", ""),
                fields["task_status"].value if fields.get("task_status") else None,
                fields.get("job_id", ""),
                dump(error.to_json()) if error else None,
            ),
        )
        self.events.append(
            RunEvent(
                run_id=self._run_id,
                seq=self._seq,
                global_seq=int(cur.lastrowid or 0),
                type=kind,
                time=self._now,
                company=self._company,
                workflow_id=self._workflow_id,
                namespace=self._namespace,
                run_status=self.run_status,
                error=error,
                **fields,
            )
        )

    def close(self) -> list[RunEvent]:
        self._conn.execute("UPDATE runs SET last_seq = ? WHERE id = ?", (self._seq, self._run_id))
        return self.events


_JSON_COLUMNS = frozenset({"input", "output", "error", "context", "job_request"})


def _column_value(name: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return ts(value)
    if name in _JSON_COLUMNS:
        return None if value is None else dump(value)
    return value


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
    tx._event(RunEventType.RUN_CREATED)
    events = tx.close()
    return get_run(conn, new.company, new.id), events


def get_run(conn: sqlite3.Connection, company: str, run_id: str) -> Run:
    row = conn.execute(
        "SELECT * FROM runs WHERE id = ? AND company = ?", (run_id, company)
    ).fetchone()
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return _run_from_rows(conn, row)


def _run_from_rows(conn: sqlite3.Connection, row: sqlite3.Row) -> Run:
    tasks = conn.execute(
        "SELECT * FROM tasks WHERE run_id = ? ORDER BY idx", (row["id"],)
    ).fetchall()
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
    after = decode_token(token, filter_key)
    sql = "SELECT * FROM runs WHERE company = ?"
    args: list[object] = [company]
    if after is not None:
        sql += " AND seq < ?"
        args.append(after)
    if filt.workflow_id:
        sql += " AND workflow_id = ?"
        args.append(filt.workflow_id)
    if filt.statuses:
        sql += f" AND status IN ({', '.join('?' * len(filt.statuses))})"
        args.extend(s.value for s in filt.statuses)
    if filt.created_after is not None:
        sql += " AND created_at > ?"
        args.append(ts(filt.created_after))
    if filt.created_before is not None:
        sql += " AND created_at < ?"
        args.append(ts(filt.created_before))
    sql += " ORDER BY seq DESC LIMIT ?"
    args.append(size + 1)
    rows = conn.execute(sql, args).fetchall()
    return Page(
        items=[_run_from_rows(conn, r) for r in rows[:size]],
        after=[encode_token(r["seq"], filter_key) for r in rows[:size]],
        more=len(rows) > size,
    )


def active_run_ids(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT company, id FROM runs WHERE status IN ('pending', 'running', 'cancelling')"
        " ORDER BY seq"
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
    sql = "SELECT * FROM run_events WHERE company = ? AND global_seq > ?"
    args: list[object] = [company, after]
    if filt.workflow_id:
        sql += " AND workflow_id = ?"
        args.append(filt.workflow_id)
    if filt.namespace:
        sql += " AND namespace = ?"
        args.append(filt.namespace)
    if filt.statuses:
        sql += f" AND run_status IN ({', '.join('?' * len(filt.statuses))})"
        args.extend(s.value for s in filt.statuses)
    sql += " ORDER BY global_seq LIMIT ?"
    args.append(limit)
    return [_event_from_row(r) for r in conn.execute(sql, args).fetchall()]


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
    )


def last_global_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(global_seq) FROM run_events").fetchone()
    return int(row[0] or 0)
