"""`RunTx`: the changes to one run inside one transaction.

Each method is one state change the engine makes: it checks the move against the domain's
transition tables and the row's current state, writes it, and appends the matching `RunEvent`,
all in the caller's transaction. `close()` returns the events, to publish after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workflowd.domain.errors import NotFound
from workflowd.domain.json import Json, JsonObject
from workflowd.domain.quotas import Quotas
from workflowd.domain.run import (
    RUN_EVENT_FOR,
    TASK_EVENT_FOR,
    Problem,
    RunEvent,
    RunEventType,
    RunStatus,
    RunTaken,
    TaskStatus,
    transition_run,
    transition_task,
)
from workflowd.store import usage
from workflowd.store.codec import dump, ts
from workflowd.store.sql import Conn


@dataclass(frozen=True, slots=True)
class _EventFields:
    task_index: int = -1
    task_name: str = ""
    task_status: TaskStatus | None = None
    job_id: str = ""
    error: Problem | None = None
    reason: str = ""


class RunTx:
    """The run's changes in one transaction. With `owner`, only while that replica owns the run:
    an executor whose run was adopted elsewhere can change nothing more (fencing)."""

    def __init__(self, conn: Conn, run_id: str, now: datetime, owner: str | None = None) -> None:
        row = conn.execute(
            "SELECT company, workflow_id, namespace, status, last_seq, owner FROM runs"
            " WHERE id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"run {run_id} not found")
        if owner is not None and row["owner"] != owner:
            raise RunTaken(f"run {run_id} belongs to replica {row['owner']} now")
        self._conn = conn
        self._run_id = run_id
        self._now = now
        self._company = row["company"]
        self._workflow_id = row["workflow_id"]
        self._namespace = row["namespace"]
        self.run_status = RunStatus(row["status"])
        self._seq = int(row["last_seq"])
        self.events: list[RunEvent] = []

    # --- the run ------------------------------------------------------------------------------

    def created(self) -> None:
        self._event(RunEventType.RUN_CREATED, _EventFields())

    def start_run(self, at: datetime) -> None:
        self._run_status(RunStatus.RUNNING, {"started_at": ts(at)}, _EventFields())

    def request_cancel(self, reason: str) -> None:
        """CANCELLING, saying who asked; nothing when the run has ended or is already stopping."""
        if self.run_status.terminal or self.run_status == RunStatus.CANCELLING:
            return
        self._run_status(
            RunStatus.CANCELLING, {"cancel_reason": reason}, _EventFields(reason=reason)
        )

    def end_run(
        self,
        status: RunStatus,
        at: datetime,
        *,
        output: Json = None,
        problem: Problem | None = None,
        reason: str = "",
    ) -> None:
        """COMPLETED with its output, FAILED with its problem, or CANCELLED with its reason."""
        columns: dict[str, Any] = {"ended_at": ts(at)}
        if status == RunStatus.COMPLETED:
            columns["output"] = dump(output)
        if problem is not None:
            columns["error"] = dump(problem.to_json())
        if reason:
            columns["cancel_reason"] = reason
        self._run_status(status, columns, _EventFields(error=problem, reason=reason))

    def set_context(self, context: JsonObject) -> None:
        self._update("runs", "id = ?", (self._run_id,), {"context": dump(context)})

    # --- its tasks ----------------------------------------------------------------------------

    def task_status(self, index: int) -> TaskStatus:
        row = self._conn.execute(
            "SELECT status FROM tasks WHERE run_id = ? AND idx = ?", (self._run_id, index)
        ).fetchone()
        if row is None:
            raise NotFound(f"run {self._run_id} has no task {index}")
        return TaskStatus(row["status"])

    def start_task(
        self, index: int, name: str, *, task_input: Json, request: JsonObject, at: datetime
    ) -> None:
        """RUNNING, with the exact job request (the intent), before the job is submitted."""
        columns = {"input": dump(task_input), "job_request": dump(request), "started_at": ts(at)}
        self._task_status(index, name, TaskStatus.RUNNING, columns, _EventFields())

    def record_job(self, index: int, name: str, job_id: str) -> None:
        """The submitted job's id (TASK_JOB_SUBMITTED), once; nothing once the task ended."""
        row = self._conn.execute(
            "SELECT status, job_id FROM tasks WHERE run_id = ? AND idx = ?", (self._run_id, index)
        ).fetchone()
        if row is None or row["status"] != TaskStatus.RUNNING or row["job_id"] == job_id:
            return
        self._update("tasks", "run_id = ? AND idx = ?", (self._run_id, index), {"job_id": job_id})
        fields = _EventFields(index, name, TaskStatus.RUNNING, job_id)
        self._event(RunEventType.TASK_JOB_SUBMITTED, fields)

    def complete_task(
        self, index: int, name: str, *, output: Json, job_id: str, at: datetime
    ) -> None:
        columns = {"output": dump(output), "job_id": job_id, "ended_at": ts(at)}
        fields = _EventFields(job_id=job_id)
        self._task_status(index, name, TaskStatus.COMPLETED, columns, fields)

    def end_task(
        self,
        index: int,
        name: str,
        status: TaskStatus,
        *,
        problem: Problem | None,
        job_id: str,
        at: datetime,
    ) -> None:
        """FAILED or CANCELLED; the job id is written too, so a job that exists is never lost."""
        columns: dict[str, Any] = {"ended_at": ts(at)}
        if job_id:
            columns["job_id"] = job_id
        if problem is not None:
            columns["error"] = dump(problem.to_json())
        fields = _EventFields(job_id=job_id, error=problem)
        self._task_status(index, name, status, columns, fields)

    def skip_task(self, index: int, name: str) -> None:
        self._task_status(index, name, TaskStatus.SKIPPED, {}, _EventFields())

    def charge_values(self, added: int, quotas: Quotas | None = None) -> None:
        """Count `added` bytes (negative: a value shrank or went) of the run's stored values in
        its company's total (`usage.py`), in this transaction. With `quotas`, a positive
        `added` that would pass the company's stored-bytes quota raises QuotaExceeded and
        counts nothing (the caller's change then rolls back)."""
        usage.charge(self._conn, self._company, added, quotas)

    def cancel_job_later(self, job_id: str, index: int) -> None:
        """Remember a job that may still run although its task ended: it is cancelled in the
        background until the jobs system confirms, across restarts."""
        self._conn.execute(
            "INSERT INTO jobs_to_cancel (job_id, run_id, task_index, since)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (job_id, self._run_id, index, ts(self._now)),
        )

    # --- writing ------------------------------------------------------------------------------

    def _run_status(self, status: RunStatus, columns: dict[str, Any], fields: _EventFields) -> None:
        transition_run(self.run_status, status)
        self.run_status = status
        self._update("runs", "id = ?", (self._run_id,), {"status": status.value, **columns})
        self._event(RUN_EVENT_FOR[status], fields)

    def _task_status(
        self,
        index: int,
        name: str,
        status: TaskStatus,
        columns: dict[str, Any],
        fields: _EventFields,
    ) -> None:
        transition_task(self.task_status(index), status)
        where = "run_id = ? AND idx = ?"
        self._update("tasks", where, (self._run_id, index), {"status": status.value, **columns})
        task = _EventFields(index, name, status, fields.job_id, fields.error, fields.reason)
        self._event(TASK_EVENT_FOR[status], task)

    def _update(
        self, table: str, where: str, key: tuple[Any, ...], columns: dict[str, Any]
    ) -> None:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        self._conn.execute(
            f"UPDATE {table} SET {assignments} WHERE {where}", (*columns.values(), *key)
        )

    def _event(self, kind: RunEventType, fields: _EventFields) -> None:
        self._seq += 1
        error = fields.error
        cur = self._conn.execute(
            "INSERT INTO run_events (run_id, seq, company, workflow_id, namespace, type, time,"
            " run_status, task_index, task_name, task_status, job_id, error, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING global_seq",
            (
                self._run_id, self._seq, self._company, self._workflow_id, self._namespace,
                kind.value, ts(self._now), self.run_status.value, fields.task_index,
                fields.task_name, fields.task_status.value if fields.task_status else None,
                fields.job_id, dump(error.to_json()) if error else None, fields.reason,
            ),
        )  # fmt: skip
        self.events.append(
            RunEvent(
                run_id=self._run_id,
                seq=self._seq,
                global_seq=int(cur.fetchone()["global_seq"]),
                type=kind,
                time=self._now,
                company=self._company,
                workflow_id=self._workflow_id,
                namespace=self._namespace,
                run_status=self.run_status,
                task_index=fields.task_index,
                task_name=fields.task_name,
                task_status=fields.task_status,
                job_id=fields.job_id,
                error=error,
                reason=fields.reason,
            )
        )

    def close(self) -> list[RunEvent]:
        self._conn.execute("UPDATE runs SET last_seq = ? WHERE id = ?", (self._seq, self._run_id))
        return self.events
