"""Deleting runs on each backend: a run another run still needs stays, whatever asks (DeleteRun
or a retention sweep): one a pending run waits for (`after_run_id`), one whose job is still
being cancelled."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from workflowd.domain.errors import FailedPrecondition
from workflowd.domain.retention import RetentionPolicy
from workflowd.domain.run import NewRun, RunStatus, RunTrigger
from workflowd.domain.workflow import NewWorkflowVersion
from workflowd.store import Store, make_store
from workflowd.store.runtx import RunTx

NOW = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


async def open_store(url: str) -> Store:
    store = make_store(url, Path("/nonexistent/unused.db"))
    await store.open()
    return store


def ended(tx: RunTx) -> None:
    tx.start_run(NOW)
    tx.end_run(RunStatus.COMPLETED, NOW, output={})


async def test_a_run_that_another_needs_is_not_deleted(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        workflow, _ = await store.save_version(
            NewWorkflowVersion("local", "ns", "wf", "1.0.0", "spec", (), NOW),
            lambda spec, anchor, after: None,
        )
        base = NewRun(
            id="awaited", company="local", workflow_id=workflow.id, namespace="ns", name="wf",
            version="1.0.0", trigger=RunTrigger.MANUAL, input={}, created_at=NOW,
        )  # fmt: skip
        await store.create_run(base)
        await store.create_run(replace(base, id="waiting", after_run_id="awaited"))
        await store.create_run(replace(base, id="cancelling"))
        await store.update_run("awaited", NOW, ended, owned=False)

        def leaves_a_job(tx: RunTx) -> None:
            ended(tx)
            tx.cancel_job_later("job-1", "/do/0/view")

        await store.update_run("cancelling", NOW, leaves_a_job, owned=False)

        with pytest.raises(FailedPrecondition) as info:
            await store.delete_run("local", "awaited")
        assert info.value.message == "run awaited cannot be deleted yet: run waiting waits for it"
        with pytest.raises(FailedPrecondition) as info:
            await store.delete_run("local", "cancelling")
        assert info.value.message == (
            "run cancelling cannot be deleted yet: its job job-1 is still being cancelled"
        )
        swept = await store.sweep(
            "local", workflow.id, RetentionPolicy(keep_last=0, keep_s=1.0), datetime.now(UTC),
            after=0, before=None, limit=25, dry_run=False,
        )  # fmt: skip
        assert (swept.deleted, swept.protected) == (0, 2)

        # Once the waiting run has ended and the job's cancel is confirmed, both may go.
        await store.update_run("waiting", NOW, ended, owned=False)
        await store.job_cancel_confirmed("job-1")
        swept = await store.sweep(
            "local", workflow.id, RetentionPolicy(keep_s=1.0), datetime.now(UTC),
            after=0, before=None, limit=25, dry_run=False,
        )  # fmt: skip
        assert (swept.deleted, swept.protected) == (3, 0)
    finally:
        await store.aclose()
