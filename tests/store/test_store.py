"""The SQLite store on a real file: migrations, group commit, checked transitions."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from workflowd.domain.definition import Schedule
from workflowd.domain.errors import WorkflowdError
from workflowd.domain.run import (
    IllegalTransition,
    NewRun,
    RunStatus,
    RunTrigger,
    TaskRun,
    TaskStatus,
)
from workflowd.domain.workflow import NewWorkflowVersion
from workflowd.store import SqliteStore
from workflowd.store.migrations import MIGRATIONS
from workflowd.store.runtx import RunTx

NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


def never_fires(spec: Schedule, anchor: datetime, after: datetime) -> datetime | None:
    """These workflows have no schedule: the store never needs a fire instant."""
    raise AssertionError("no schedule to compute")


async def open_store(path: Path) -> SqliteStore:
    store = SqliteStore(path)
    await store.open()
    return store


async def new_run(store: SqliteStore, run_id: str) -> None:
    workflow, _ = await store.save_version(
        NewWorkflowVersion("local", "ns", "wf", "1.0.0", "spec", (), NOW), never_fires
    )
    await store.create_run(
        NewRun(
            id=run_id,
            company="local",
            workflow_id=workflow.id,
            namespace="ns",
            name="wf",
            version="1.0.0",
            trigger=RunTrigger.MANUAL,
            input={},
            tasks=(TaskRun(0, "a", "ExecuteDml", "/do/0/a"),),
            created_at=NOW,
        )
    )


async def test_migrations_apply_once_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    store = await open_store(path)
    await store.aclose()
    store = await open_store(path)
    await store.aclose()
    with sqlite3.connect(path) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        assert versions == list(range(1, len(MIGRATIONS) + 1))
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("INSERT INTO schema_migrations (version) VALUES (999)")
    with pytest.raises(WorkflowdError) as info:
        await open_store(path)
    assert "newer than this workflowd knows" in info.value.message


async def test_concurrent_writes_group_commit_and_a_failing_one_is_isolated(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path / "w.db")
    await new_run(store, "r1")

    def start(tx: RunTx) -> None:
        tx.start_run(NOW)

    def illegal(tx: RunTx) -> None:
        # PENDING → COMPLETED is not allowed
        tx.complete_task(0, "a", output=None, job_id="", at=NOW)

    def set_context(value: int) -> object:
        return lambda tx: tx.set_context({"n": value})

    futures = [store.update_run("r1", NOW, start), store.update_run("r1", NOW, illegal)]
    futures += [store.update_run("r1", NOW, set_context(i)) for i in range(200)]  # type: ignore[arg-type]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[1], IllegalTransition)
    assert [e.type.value for e in results[0]] == ["run_started"]  # type: ignore[union-attr]
    run = await store.get_run("local", "r1")
    assert run.status == RunStatus.RUNNING
    assert run.tasks[0].status == TaskStatus.PENDING
    assert run.context == {"n": 199}
    events = await store.events_after("local", "r1", 0, 100)
    assert [e.seq for e in events] == [1, 2]
    await store.aclose()


async def test_writes_survive_reopening_and_other_companies_see_nothing(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    store = await open_store(path)
    await new_run(store, "r1")
    await store.aclose()
    store = await open_store(path)
    assert (await store.get_run("local", "r1")).status == RunStatus.PENDING
    with pytest.raises(WorkflowdError):
        await store.get_run("another-company", "r1")
    assert await store.active_runs() == ["r1"]
    await store.aclose()
    with pytest.raises(WorkflowdError):
        await store.get_run("local", "r1")
