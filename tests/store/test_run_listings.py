"""The web page's run listings on each backend: by trigger kind, several statuses at once,
without task instances, in keyset pages, each served by an index."""

from __future__ import annotations

import uuid
from datetime import timedelta

from tests.store.test_store import NOW, never_fires, open_store
from workflowd.domain.run import NewInstance, NewRun, RunFilter, RunStatus, RunTrigger
from workflowd.domain.workflow import NewWorkflowVersion
from workflowd.store.runtx import RunTx


async def test_runs_listed_by_trigger_and_statuses_without_their_instances(
    store_url: str,
) -> None:
    store = await open_store(store_url)
    try:
        workflow, _ = await store.save_version(
            NewWorkflowVersion("local", "ns", "wf", "1.0.0", "spec", (), NOW), never_fires
        )
        made: dict[str, tuple[RunTrigger, RunStatus]] = {}
        for i, trigger in enumerate([RunTrigger.MANUAL, RunTrigger.SCHEDULE, RunTrigger.RERUN] * 3):
            run_id = str(uuid.uuid4())
            at = NOW + timedelta(seconds=i)
            await store.create_run(
                NewRun(
                    id=run_id,
                    company="local",
                    workflow_id=workflow.id,
                    namespace="ns",
                    name="wf",
                    version="1.0.0",
                    trigger=trigger,
                    input={},
                    created_at=at,
                    scheduled_at=at if trigger == RunTrigger.SCHEDULE else None,
                )
            )
            status = RunStatus.PENDING
            if i % 2:

                def start(tx: RunTx) -> None:
                    tx.start_run(NOW)
                    tx.start_instance(
                        NewInstance("/do/0/a", 1, "a", "set", "", "/do/0/a", 0, (), 1, "", NOW)
                    )

                await store.update_run(run_id, NOW, start)
                status = RunStatus.RUNNING
            made[run_id] = (trigger, status)

        async def listed(filt: RunFilter, tasks: bool = True) -> list[str]:
            ids: list[str] = []
            token = ""
            while True:
                page = await store.list_runs("local", filt, 2, token, tasks=tasks)
                ids += [r.id for r in page.items]
                if not tasks:
                    assert all(r.tasks == () for r in page.items)
                if not page.more:
                    return ids
                token = page.after[-1]

        newest_first = list(reversed(made))
        assert await listed(RunFilter()) == newest_first
        assert await listed(RunFilter(), tasks=False) == newest_first
        with_tasks = await store.list_runs("local", RunFilter(), 100, "")
        assert sum(len(r.tasks) for r in with_tasks.items) == 4
        schedule_or_rerun = (RunTrigger.SCHEDULE, RunTrigger.RERUN)
        assert await listed(RunFilter(triggers=schedule_or_rerun), tasks=False) == [
            r for r in newest_first if made[r][0] in schedule_or_rerun
        ]
        assert await listed(
            RunFilter(triggers=(RunTrigger.MANUAL,), statuses=(RunStatus.RUNNING,))
        ) == [r for r in newest_first if made[r] == (RunTrigger.MANUAL, RunStatus.RUNNING)]
        assert await listed(RunFilter(statuses=(RunStatus.PENDING, RunStatus.RUNNING))) == (
            newest_first
        )
    finally:
        await store.aclose()


async def test_the_listings_indexes_exist(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        async with store.db.reader() as reader:
            if store_url.startswith("postgresql"):
                found = await reader.fetch(
                    "SELECT indexname AS name FROM pg_indexes WHERE tablename = 'runs'"
                    " AND schemaname = current_schema()"
                )
            else:
                found = await reader.fetch(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs'"
                )
        names = {row["name"] for row in found}
        assert {
            "runs_company_status_seq",
            "runs_company_trigger_seq",
            "runs_workflow_status_seq",
        } <= names
    finally:
        await store.aclose()
