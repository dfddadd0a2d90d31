"""Run writes (synchronous; they run on the store's writer inside its transaction).

Every state change of an existing run goes through `RunTx` (`runtx.py`), which checks the move
against the domain's transition tables and appends the matching `RunEvent` in the same
transaction. Reads are in `reads.py`.
"""

from __future__ import annotations

from workflowd.domain.errors import AlreadyExists
from workflowd.domain.run import NewRun, Run, RunEvent, RunStatus
from workflowd.store import rows
from workflowd.store.codec import dump, load, ts
from workflowd.store.runtx import RunTx
from workflowd.store.sql import Conn


def create_run(conn: Conn, new: NewRun) -> tuple[str, list[RunEvent], bool]:
    """(run id, events, created): the run under the request's idempotency key if there is
    one, else a new run."""
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
            return str(row["id"]), [], False
    return new.id, insert_run(conn, new), True


def written_run(conn: Conn, run_id: str) -> Run:
    """The run as this transaction leaves it: a write that creates a run answers with it
    without another trip to a reader."""
    row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    tasks = conn.execute("SELECT * FROM task_instances WHERE run_id = ? ORDER BY ord", (run_id,))
    return rows.run(row, tasks.fetchall())


def insert_run(conn: Conn, new: NewRun) -> list[RunEvent]:
    """The run, PENDING, and its RUN_CREATED event."""
    conn.execute(
        "INSERT INTO runs (id, company, workflow_id, namespace, name, version, status, trigger,"
        " input, created_at, scheduled_at, idempotency_key, after_run_id, rerun_of,"
        " replay_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.id, new.company, new.workflow_id, new.namespace, new.name, new.version,
            RunStatus.PENDING.value, new.trigger.value, dump(new.input), ts(new.created_at),
            ts(new.scheduled_at), new.idempotency_key, new.after_run_id, new.rerun_of,
            new.replay_until,
        ),
    )  # fmt: skip
    tx = RunTx(conn, new.id, new.created_at)
    tx.created()
    return tx.close()


def forget_job_to_cancel(conn: Conn, job_id: str) -> None:
    conn.execute("DELETE FROM jobs_to_cancel WHERE job_id = ?", (job_id,))
