"""`RunTx`: the changes to one run inside one transaction.

Each method is one state change the engine makes: it checks the move against the domain's
transition tables and the row's current state, writes it, and appends the matching `RunEvent`,
all in the caller's transaction. `close()` writes the events in one statement, each numbered in
its company's sequence (the `global_seq` a company sees: its events 1, 2, 3… in commit order, so
that its cursors count nothing of other companies'), and returns them, to publish after the
commit. Only the replicas' follower reads the log's own order (`run_events.global_seq`,
`reads.events_since`).

A change's writes to the run's row and to its instances' rows are gathered and written when it
closes (or before a statement that reads them), one statement per row: a task's end with the
next one's start, input and job request is three row writes, not seven. The writer runs every
statement on its own thread, each a handover of the interpreter's lock with the event loop, so
statements saved are latency saved as well as CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workflowd.domain.errors import NotFound
from workflowd.domain.json import Json, JsonObject
from workflowd.domain.run import (
    RUN_EVENT_FOR,
    TASK_EVENT_FOR,
    NewInstance,
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
from workflowd.store.codec import dump, load, ts
from workflowd.store.outbox import Outbox
from workflowd.store.sql import Conn, marks


@dataclass(frozen=True, slots=True)
class _Instance:
    """What an instance's events repeat about it."""

    key: str = ""
    name: str = ""
    reference: str = ""
    position: int = -1
    iteration: tuple[int, ...] = ()
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class _EventFields:
    task: _Instance = _Instance()
    task_status: TaskStatus | None = None
    job_id: str = ""
    error: Problem | None = None
    reason: str = ""
    until: datetime | None = None


# A change's events go in one INSERT each this many (20 values a row: far below SQLite's limit
# on bound values, 32,766, and PostgreSQL's, 65,535).
_EVENTS_PER_INSERT = 500
_EVENT_COLUMNS = (
    "run_id", "seq", "company", "workflow_id", "namespace", "type", "time", "run_status",
    "task_index", "task_name", "task_status", "job_id", "error", "reason", "task_key", "task_ref",
    "iteration", "attempt", "until", "company_seq",
)  # fmt: skip
_EVENT_ROW = f"({marks(len(_EVENT_COLUMNS))})"


class RunTx:
    """The run's changes in one transaction. With `owner`, only while that replica owns the run:
    an executor whose run was adopted elsewhere can change nothing more (fencing). With
    `outbox`, each event the operator's webhooks want is written there too."""

    def __init__(
        self,
        conn: Conn,
        run_id: str,
        now: datetime,
        owner: str | None = None,
        outbox: Outbox | None = None,
    ) -> None:
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
        self._now_text = ts(now)
        # Bytes of stored values added (or freed) by this transaction's changes: counted in the
        # company's total once, when the transaction's changes close, not once per value.
        self._stored_bytes = 0
        self._company = row["company"]
        self._workflow_id = row["workflow_id"]
        self._namespace = row["namespace"]
        self.run_status = RunStatus(row["status"])
        self._seq = int(row["last_seq"])
        self._instances: dict[str, tuple[_Instance, TaskStatus]] = {}
        # Writes not made yet (`_flush`): the run's columns, instances started in this change
        # (their whole row), and columns of instances that were there before it.
        self._run_columns: dict[str, Any] = {}
        self._new_rows: dict[str, dict[str, Any]] = {}
        self._instance_columns: dict[str, dict[str, Any]] = {}
        self._outbox = outbox
        # (type, fields, seq, the run's status then) of each event not written yet.
        self._drafts: list[tuple[RunEventType, _EventFields, int, RunStatus]] = []
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
            columns["output"] = self._stored(dump(output))
        if problem is not None:
            columns["error"] = dump(problem.to_json())
        if reason:
            columns["cancel_reason"] = reason
        self._run_status(status, columns, _EventFields(error=problem, reason=reason))

    def set_context(self, context: JsonObject) -> None:
        # Counted in UTF-8 bytes both ways (SQL's LENGTH counts characters).
        if "context" in self._run_columns:
            old = self._run_columns["context"]
        else:
            row = self._conn.execute(
                "SELECT context FROM runs WHERE id = ?", (self._run_id,)
            ).fetchone()
            old = row["context"]
        text = dump(context)
        self._stored_bytes += len(text.encode()) - len((old or "").encode())
        self._run_columns["context"] = text

    def set_cursor(self, cursor: JsonObject | None) -> None:
        """Where the interpretation stands, committed with the changes that brought it there."""
        self._run_columns["cursor"] = None if cursor is None else dump(cursor)

    # --- its task instances -------------------------------------------------------------------

    def start_instance(self, new: NewInstance) -> None:
        """A task instance begins, RUNNING (TASK_STARTED)."""
        if new.key in self._new_rows:
            raise ValueError(f"task instance {new.key} of run {self._run_id} started twice")
        self._new_rows[new.key] = {
            "run_id": self._run_id, "key": new.key, "ord": new.order,
            "reference": new.reference, "name": new.name, "kind": new.kind, "call": new.call,
            "position": new.position, "iteration": dump(list(new.iteration)),
            "attempt": new.attempt, "parent": new.parent, "status": TaskStatus.RUNNING.value,
            "started_at": ts(new.started_at),
        }  # fmt: skip
        instance = _Instance(
            new.key, new.name, new.reference, new.position, new.iteration, new.attempt
        )
        self._instances[new.key] = (instance, TaskStatus.RUNNING)
        fields = _EventFields(instance, TaskStatus.RUNNING)
        self._event(RunEventType.TASK_STARTED, fields)

    def set_input(self, key: str, task_input: Json) -> None:
        self._update_instance(key, {"input": self._stored(dump(task_input))})

    def record_intent(self, key: str, request: JsonObject) -> None:
        """The exact job request, committed before the job is submitted."""
        self._update_instance(key, {"job_request": self._stored(dump(request))})

    def record_job(self, key: str, job_id: str) -> None:
        """The submitted job's id (TASK_JOB_SUBMITTED), once; nothing once the task ended."""
        self._flush()
        # One statement checks and writes: a row that ended, or has this id already, is left.
        row = self._conn.execute(
            "UPDATE task_instances SET job_id = ? WHERE run_id = ? AND key = ? AND status = ?"
            " AND (job_id IS NULL OR job_id <> ?)"
            " RETURNING name, reference, position, iteration, attempt, status",
            (job_id, self._run_id, key, TaskStatus.RUNNING.value, job_id),
        ).fetchone()
        if row is None:
            return
        instance, _ = self._instances.get(key) or self._cache(key, row)
        self._event(
            RunEventType.TASK_JOB_SUBMITTED, _EventFields(instance, TaskStatus.RUNNING, job_id)
        )

    def end_instance(
        self,
        key: str,
        status: TaskStatus,
        at: datetime,
        *,
        output: Json = None,
        store_output: bool = False,
        problem: Problem | None = None,
        reason: str = "",
        job_id: str = "",
        reused: bool = False,
    ) -> None:
        """COMPLETED, FAILED, CANCELLED or SKIPPED; the job id is written too, so a job that
        exists is never lost. `reused`: a re-run took the outcome from the run it re-runs."""
        columns: dict[str, Any] = {"ended_at": ts(at), "wake_at": None}
        if reused:
            columns["reused"] = 1
        if store_output:
            columns["output"] = self._stored(dump(output))
        if job_id:
            columns["job_id"] = job_id
        if problem is not None:
            columns["error"] = dump(problem.to_json())
        if reason:
            columns["reason"] = reason
        instance, current = self._instance(key)
        transition_task(current, status)
        self._update_instance(key, {"status": status.value, **columns})
        self._instances[key] = (instance, status)
        fields = _EventFields(instance, status, job_id, problem, reason)
        self._event(TASK_EVENT_FOR[status], fields)

    def instance_waits(self, key: str, until: datetime) -> None:
        """A `wait` sleeps until `until` (TASK_WAITING)."""
        self._update_instance(key, {"wake_at": ts(until)})
        instance, status = self._instance(key)
        self._event(RunEventType.TASK_WAITING, _EventFields(instance, status, until=until))

    def instance_retries(self, key: str, attempt: int, until: datetime, problem: Problem) -> None:
        """A `try` runs its block again as `attempt` at `until` (TASK_RETRYING)."""
        self._update_instance(key, {"wake_at": ts(until)})
        instance, status = self._instance(key)
        fields = _EventFields(
            _Instance(
                instance.key, instance.name, instance.reference, instance.position,
                instance.iteration, attempt,
            ),
            status, error=problem, until=until,
        )  # fmt: skip
        self._event(RunEventType.TASK_RETRYING, fields)

    def error_caught(self, key: str, problem: Problem) -> None:
        """A `try` caught an error (TASK_ERROR_CAUGHT)."""
        instance, status = self._instance(key)
        self._event(RunEventType.TASK_ERROR_CAUGHT, _EventFields(instance, status, error=problem))

    def fail_running_instances(
        self, at: datetime, problem: Problem, job_ids: Mapping[str, str]
    ) -> None:
        """Every instance still RUNNING fails with `problem`, with its job id if it has one (the
        run ends on an internal error: whatever ran, nothing goes on)."""
        self._flush()
        found = self._conn.execute(
            "SELECT key FROM task_instances WHERE run_id = ? AND status = ? ORDER BY ord DESC",
            (self._run_id, TaskStatus.RUNNING.value),
        ).fetchall()
        for row in found:
            job_id = job_ids.get(row["key"], "")
            self.end_instance(row["key"], TaskStatus.FAILED, at, problem=problem, job_id=job_id)

    def cancel_job_later(self, job_id: str, key: str) -> None:
        """Remember a job that may still run although its task ended: it is cancelled in the
        background until the jobs system confirms, across restarts."""
        self._conn.execute(
            "INSERT INTO jobs_to_cancel (job_id, run_id, task_index, task_key, since)"
            " VALUES (?, ?, -1, ?, ?) ON CONFLICT DO NOTHING",
            (job_id, self._run_id, key, self._now_text),
        )

    # --- writing ------------------------------------------------------------------------------

    def _stored(self, text: str) -> str:
        """`text`, counted in the company's stored bytes (`usage.py`): a value the run keeps."""
        self._stored_bytes += len(text.encode())
        return text

    def _instance(self, key: str) -> tuple[_Instance, TaskStatus]:
        known = self._instances.get(key)
        if known is not None:
            return known
        row = self._conn.execute(
            "SELECT name, reference, position, iteration, attempt, status FROM task_instances"
            " WHERE run_id = ? AND key = ?",
            (self._run_id, key),
        ).fetchone()
        if row is None:
            raise NotFound(f"run {self._run_id} has no task instance {key}")
        return self._cache(key, row)

    def _cache(self, key: str, row: Any) -> tuple[_Instance, TaskStatus]:
        iteration = tuple(int(i) for i in _list(row["iteration"]))
        instance = _Instance(
            key, row["name"], row["reference"], row["position"], iteration, row["attempt"]
        )
        found = (instance, TaskStatus(row["status"]))
        self._instances[key] = found
        return found

    def _update_instance(self, key: str, columns: dict[str, Any]) -> None:
        row = self._new_rows.get(key)
        if row is None:
            row = self._instance_columns.setdefault(key, {})
        row.update(columns)

    def _run_status(self, status: RunStatus, columns: dict[str, Any], fields: _EventFields) -> None:
        transition_run(self.run_status, status)
        self.run_status = status
        self._run_columns.update({"status": status.value, **columns})
        self._event(RUN_EVENT_FOR[status], fields)

    def _flush(self) -> None:
        """Write what this change gathered so far: one statement per row."""
        if self._run_columns:
            self._update("runs", "id = ?", (self._run_id,), self._run_columns)
            self._run_columns = {}
        for row in self._new_rows.values():
            self._conn.execute(
                f"INSERT INTO task_instances ({', '.join(row)}) VALUES ({marks(len(row))})",
                tuple(row.values()),
            )
        self._new_rows = {}
        for key, columns in self._instance_columns.items():
            self._update("task_instances", "run_id = ? AND key = ?", (self._run_id, key), columns)
        self._instance_columns = {}

    def _update(
        self, table: str, where: str, key: tuple[Any, ...], columns: dict[str, Any]
    ) -> None:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        self._conn.execute(
            f"UPDATE {table} SET {assignments} WHERE {where}", (*columns.values(), *key)
        )

    def _event(self, kind: RunEventType, fields: _EventFields) -> None:
        """The event, written with the others when the changes close (`close`)."""
        self._seq += 1
        self._drafts.append((kind, fields, self._seq, self.run_status))

    def close(self) -> list[RunEvent]:
        """Write the run's new events, each with its company's number (the `global_seq` the
        company sees), its last seq, and the stored bytes its changes added; return the
        events, to publish once the transaction committed."""
        self._run_columns["last_seq"] = self._seq
        self._flush()
        usage.add_stored(self._conn, self._company, self._stored_bytes)
        self._stored_bytes = 0
        drafts, self._drafts = self._drafts, []
        first = self._number(len(drafts)) if drafts else 0
        written: list[RunEvent] = []
        for start in range(0, len(drafts), _EVENTS_PER_INSERT):
            chunk = drafts[start : start + _EVENTS_PER_INSERT]
            written += self._write_events(chunk, first + start if first else 0)
        if self._outbox is not None:
            for event in written:
                self._outbox.run_event(self._conn, event)
        self.events += written
        return self.events

    def _number(self, count: int) -> int:
        """SQLite: the first of `count` numbers the company's sequence hands out, in one
        statement (the store's one writer takes them in commit order). 0 on PostgreSQL, whose
        trigger numbers each event as it is inserted, under the write lock replicas share."""
        if self._conn.dialect.name == "postgresql":
            return 0
        row = self._conn.execute(
            "INSERT INTO company_sequences (company, last_seq) VALUES (?, ?)"
            " ON CONFLICT (company) DO UPDATE"
            " SET last_seq = company_sequences.last_seq + excluded.last_seq RETURNING last_seq",
            (self._company, count),
        ).fetchone()
        return int(row["last_seq"]) - count + 1

    def _write_events(
        self, drafts: list[tuple[RunEventType, _EventFields, int, RunStatus]], first: int
    ) -> list[RunEvent]:
        """Insert these events in one statement, numbered from `first` in the company's
        sequence (0: by PostgreSQL's trigger), and return them as written."""
        rows: list[object] = []
        for i, (kind, fields, seq, run_status) in enumerate(drafts):
            error, task = fields.error, fields.task
            rows += (
                self._run_id, seq, self._company, self._workflow_id, self._namespace,
                kind.value, self._now_text, run_status.value, task.position,
                task.name, fields.task_status.value if fields.task_status else None,
                fields.job_id, dump(error.to_json()) if error else None, fields.reason,
                task.key, task.reference, dump(list(task.iteration)), task.attempt,
                ts(fields.until), first + i if first else 0,
            )  # fmt: skip
        numbered = {
            int(row["seq"]): int(row["company_seq"])
            for row in self._conn.execute(
                f"INSERT INTO run_events ({', '.join(_EVENT_COLUMNS)})"
                f" VALUES {', '.join([_EVENT_ROW] * len(drafts))} RETURNING seq, company_seq",
                rows,
            ).fetchall()
        }
        return [
            RunEvent(
                run_id=self._run_id,
                seq=seq,
                global_seq=numbered[seq],
                type=kind,
                time=self._now,
                company=self._company,
                workflow_id=self._workflow_id,
                namespace=self._namespace,
                run_status=run_status,
                task_index=fields.task.position,
                task_name=fields.task.name,
                task_status=fields.task_status,
                job_id=fields.job_id,
                error=fields.error,
                reason=fields.reason,
                task_key=fields.task.key,
                task_reference=fields.task.reference,
                iteration=fields.task.iteration,
                attempt=fields.task.attempt,
                until=fields.until,
            )
            for kind, fields, seq, run_status in drafts
        ]


def _list(raw: str) -> list[Any]:
    value = load(raw) if raw else []
    return value if isinstance(value, list) else []
