"""Deleting runs and workflows (synchronous; on the store's writer).

A run goes with its task instances and events, in one transaction, and only when it has ended
and no run still needs it: an active re-run reads its original's outcomes, a waiting run waits
for the run named by its `after_run_id`, and a job still to be cancelled keeps its run (the
promise to cancel it is stored there). Each company's stored bytes shrink by what went, and
`company_sequences.pruned_through` remembers the newest event deleted, so a watcher resuming
from before it learns that events are missing instead of missing them in silence.

Every statement finds its rows through an index (`runs.id`, `run_events (run_id, seq)`,
`task_instances (run_id, key)`, `runs_rerun_of`, `runs_after_run_id`, `jobs_to_cancel_run`),
and callers pass a bounded batch of runs: one batch holds the writer for a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from workflowd.domain.errors import FailedPrecondition, NotFound
from workflowd.domain.run import ACTIVE_RUN_STATUSES, RunStatus
from workflowd.domain.workflow import WorkflowStatus
from workflowd.store import usage
from workflowd.store.codec import ts
from workflowd.store.sql import Conn, marks

_ACTIVE = ", ".join(f"'{status.value}'" for status in ACTIVE_RUN_STATUSES)


def needed(conn: Conn, run_ids: Sequence[str]) -> dict[str, str]:
    """Of `run_ids`, those a run still needs, each with why. (`!= ''` spelled out: the
    planner then uses the partial indexes, which a bound list cannot be proved to match.)"""
    if not run_ids:
        return {}
    why: dict[str, str] = {}
    for row in conn.execute(
        f"SELECT job_id, run_id FROM jobs_to_cancel WHERE run_id IN ({marks(len(run_ids))})",
        run_ids,
    ).fetchall():
        why[row["run_id"]] = f"its job {row['job_id']} is still being cancelled"
    for column, reason in _NEEDED_BY:
        for row in conn.execute(
            f"SELECT id, {column} FROM runs WHERE {column} IN ({marks(len(run_ids))})"
            f" AND {column} != '' AND status IN ({_ACTIVE})",
            run_ids,
        ).fetchall():
            why[row[column]] = f"run {row['id']} {reason}"
    return why


# The columns by which an active run needs another (each has a partial index), and why.
_NEEDED_BY = (
    ("after_run_id", "waits for it"),
    ("rerun_of", "re-runs it and reads its outcomes"),
)


def delete_runs(conn: Conn, company: str, run_ids: Sequence[str]) -> int:
    """Delete these runs of `company` (the caller chose them: ended, not needed) with their
    instances and events; returns how many went."""
    if not run_ids:
        return 0
    args = list(run_ids)
    inside = marks(len(args))
    newest = conn.execute(
        f"SELECT MAX(company_seq) AS n FROM run_events WHERE run_id IN ({inside})", args
    ).fetchone()["n"]
    size = conn.dialect.octets.format
    freed = conn.execute(
        f"SELECT COALESCE(SUM({size('input')} + {size('context')}"
        f" + COALESCE({size('output')}, 0)), 0) AS n FROM runs WHERE id IN ({inside})",
        args,
    ).fetchone()["n"]
    freed += conn.execute(
        f"SELECT COALESCE(SUM(COALESCE({size('input')}, 0) + COALESCE({size('job_request')}, 0)"
        f" + COALESCE({size('output')}, 0)), 0) AS n FROM task_instances"
        f" WHERE run_id IN ({inside})",
        args,
    ).fetchone()["n"]
    conn.execute(f"DELETE FROM run_events WHERE run_id IN ({inside})", args)
    conn.execute(f"DELETE FROM task_instances WHERE run_id IN ({inside})", args)
    gone = conn.execute(f"DELETE FROM runs WHERE id IN ({inside}) RETURNING id", args).fetchall()
    # Never below zero: a store migrated from before values were counted in bytes counted its
    # old ones in characters.
    stored = usage.stored_bytes(conn, company)
    usage.add_stored(conn, company, -min(int(freed), stored))
    if newest:
        conn.execute(
            "UPDATE company_sequences SET pruned_through = ?"
            " WHERE company = ? AND pruned_through < ?",
            (int(newest), company, int(newest)),
        )
    return len(gone)


def delete_run(conn: Conn, company: str, run_id: str) -> None:
    """Delete one run of `company`: NotFound for another company's, FailedPrecondition while
    it is active or another run needs it."""
    row = conn.execute(
        "SELECT status FROM runs WHERE id = ? AND company = ?", (run_id, company)
    ).fetchone()
    if row is None:
        raise NotFound(f"run {run_id} not found")
    status = RunStatus(row["status"])
    if not status.terminal:
        raise FailedPrecondition(
            f"run {run_id} is {status.value}: only an ended run can be deleted; cancel it"
            " with CancelRun first"
        )
    why = needed(conn, [run_id]).get(run_id)
    if why:
        raise FailedPrecondition(f"run {run_id} cannot be deleted yet: {why}")
    delete_runs(conn, company, [run_id])


def archived(conn: Conn, company: str, workflow_id: str) -> None:
    """The company's workflow must be archived, with no active run, to be deleted."""
    row = conn.execute(
        "SELECT namespace, name, status FROM workflows WHERE id = ? AND company = ?",
        (workflow_id, company),
    ).fetchone()
    if row is None:
        raise NotFound(f"workflow {workflow_id} not found")
    named = f"{row['namespace']}/{row['name']}"
    if row["status"] != WorkflowStatus.ARCHIVED:
        raise FailedPrecondition(
            f"workflow {named} is not archived: archive it with ArchiveWorkflow first (its"
            " schedule stops and it accepts no runs), then delete it"
        )
    # By company first: the planner then walks the company's active runs (a partial index),
    # not every run of the workflow, on each batch of a large delete.
    active = conn.execute(
        "SELECT COUNT(*) AS n FROM runs WHERE company = ? AND workflow_id = ?"
        f" AND status IN ({_ACTIVE})",
        (company, workflow_id),
    ).fetchone()["n"]
    if active:
        raise FailedPrecondition(
            f"workflow {named} has {active} active run{'s' if active != 1 else ''}: cancel them"
            " with CancelRun, then delete it"
        )


def delete_workflow_runs(conn: Conn, company: str, workflow_id: str, limit: int) -> int:
    """Delete up to `limit` of an archived workflow's runs (oldest first); 0 once none is
    left. Its runs all ended (`archived` checked it, and an archived workflow starts none)."""
    archived(conn, company, workflow_id)
    rows = conn.execute(
        "SELECT id FROM runs WHERE workflow_id = ? ORDER BY seq LIMIT ?", (workflow_id, limit)
    ).fetchall()
    return delete_runs(conn, company, [row["id"] for row in rows])


def delete_workflow(conn: Conn, company: str, workflow_id: str) -> int:
    """Delete an archived workflow whose runs are gone: its versions, schedule, decisions and
    retention policy; returns how many versions went. Its name is free again."""
    archived(conn, company, workflow_id)
    left = conn.execute(
        "SELECT COUNT(*) AS n FROM runs WHERE workflow_id = ?", (workflow_id,)
    ).fetchone()["n"]
    if left:
        raise FailedPrecondition(f"workflow {workflow_id} still has {left} runs to delete")
    conn.execute("DELETE FROM schedule_decisions WHERE workflow_id = ?", (workflow_id,))
    conn.execute("DELETE FROM schedules WHERE workflow_id = ?", (workflow_id,))
    conn.execute(
        "DELETE FROM retention_policies WHERE company = ? AND workflow_id = ?",
        (company, workflow_id),
    )
    versions = conn.execute(
        "DELETE FROM workflow_versions WHERE workflow_id = ? RETURNING version", (workflow_id,)
    ).fetchall()
    conn.execute("DELETE FROM workflows WHERE id = ?", (workflow_id,))
    return len(versions)


def unarchive(conn: Conn, company: str, workflow_id: str, now: datetime) -> None:
    """An archived workflow of the company becomes active (its schedule stays stopped)."""
    row = conn.execute(
        "SELECT status FROM workflows WHERE id = ? AND company = ?", (workflow_id, company)
    ).fetchone()
    if row is None:
        raise NotFound(f"workflow {workflow_id} not found")
    if row["status"] == WorkflowStatus.ARCHIVED:
        conn.execute(
            "UPDATE workflows SET status = ?, archived_at = NULL, updated_at = ? WHERE id = ?",
            (WorkflowStatus.ACTIVE.value, ts(now), workflow_id),
        )
