"""The SQLite store: the async face of the store modules."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from workflowd.domain.json import Json
from workflowd.domain.page import Page
from workflowd.domain.run import NewRun, Run, RunEvent, RunFilter, WatchFilter
from workflowd.domain.schedule import (
    Activation,
    FireDecision,
    FireRequest,
    FireResult,
    NextFire,
    WorkflowSchedule,
)
from workflowd.domain.workflow import NewWorkflowVersion, Workflow, WorkflowFilter
from workflowd.store import runs, schedules, workflows
from workflowd.store.db import Database
from workflowd.store.paging import page_size
from workflowd.store.runtx import RunTx


class SqliteStore:
    """Workflows, runs and events in one SQLite file (WAL, one group-committing writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = Database(path)

    async def open(self) -> None:
        await self.db.open()

    async def aclose(self) -> None:
        await self.db.aclose()

    async def save_version(
        self, new: NewWorkflowVersion, next_fire: NextFire
    ) -> tuple[Workflow, bool]:
        def op(conn: sqlite3.Connection) -> tuple[Workflow, bool]:
            workflow, created = workflows.save_version(conn, new)
            if created and workflow.current_version == new.version:
                schedules.follow_version(
                    conn, workflow.id, new.version, new.schedule, new.now, next_fire
                )
            return workflow, created

        return await self.db.write(op)

    async def get_workflow(
        self,
        company: str,
        *,
        workflow_id: str = "",
        namespace: str = "",
        name: str = "",
        version: str = "",
    ) -> Workflow:
        def op(conn: sqlite3.Connection) -> Workflow:
            wid = workflow_id or workflows.find_id(conn, company, namespace, name)
            return workflows.get(conn, company, wid, version or None)

        return await self.db.read(op)

    async def list_workflows(
        self, company: str, filt: WorkflowFilter, size: int, token: str
    ) -> Page[Workflow]:
        n = page_size(size)
        return await self.db.read(lambda conn: workflows.list_page(conn, company, filt, n, token))

    async def archive_workflow(self, company: str, workflow_id: str, now: datetime) -> Workflow:
        def op(conn: sqlite3.Connection) -> Workflow:
            workflow = workflows.archive(conn, company, workflow_id, now)
            schedules.deactivate(conn, workflow_id, now, "the workflow was archived")
            return workflow

        return await self.db.write(op)

    async def activate_schedule(
        self, activation: Activation, next_fire: NextFire
    ) -> WorkflowSchedule:
        return await self.db.write(lambda conn: schedules.activate(conn, activation, next_fire))

    async def deactivate_schedule(
        self, company: str, workflow_id: str, now: datetime, reason: str
    ) -> WorkflowSchedule:
        def op(conn: sqlite3.Connection) -> WorkflowSchedule:
            schedules.get(conn, company, workflow_id)  # NOT_FOUND for another company's
            stopped = schedules.deactivate(conn, workflow_id, now, reason)
            assert stopped is not None
            return stopped

        return await self.db.write(op)

    async def get_schedule(self, company: str, workflow_id: str) -> WorkflowSchedule:
        return await self.db.read(lambda conn: schedules.get(conn, company, workflow_id))

    async def schedule_of(self, workflow_id: str) -> WorkflowSchedule | None:
        return await self.db.read(lambda conn: schedules.get_any(conn, workflow_id))

    async def list_schedules(
        self, company: str, namespace: str, size: int, token: str
    ) -> Page[WorkflowSchedule]:
        n = page_size(size)
        return await self.db.read(
            lambda conn: schedules.list_page(conn, company, namespace, n, token)
        )

    async def due_schedules(self) -> list[tuple[str, datetime]]:
        return await self.db.read(schedules.due)

    async def fire(self, request: FireRequest, next_at: datetime | None) -> FireResult:
        return await self.db.write(lambda conn: schedules.fire(conn, request, next_at))

    async def record_decision(
        self, workflow_id: str, decision: FireDecision, next_at: datetime | None
    ) -> None:
        await self.db.write(
            lambda conn: schedules.record_decision(conn, workflow_id, decision, next_at)
        )

    async def create_backfill(
        self, runs: list[NewRun], sequential: bool
    ) -> list[tuple[Run, list[RunEvent], bool]]:
        return await self.db.write(lambda conn: schedules.create_backfill(conn, runs, sequential))

    async def create_run(self, new: NewRun) -> tuple[Run, list[RunEvent], bool]:
        return await self.db.write(lambda conn: runs.create_run(conn, new))

    async def get_run(self, company: str, run_id: str) -> Run:
        return await self.db.read(lambda conn: runs.get_run(conn, company, run_id))

    async def list_runs(self, company: str, filt: RunFilter, size: int, token: str) -> Page[Run]:
        n = page_size(size)
        return await self.db.read(lambda conn: runs.list_page(conn, company, filt, n, token))

    def update_run(
        self, run_id: str, now: datetime, change: Callable[[RunTx], None]
    ) -> asyncio.Future[list[RunEvent]]:
        """Queue `change` to run in a transaction (in commit order) and return the future of
        the events it appended, resolved once they are durable."""

        def op(conn: sqlite3.Connection) -> list[RunEvent]:
            tx = RunTx(conn, run_id, now)
            change(tx)
            return tx.close()

        return self.db.submit(op)

    async def jobs_to_cancel(self) -> list[tuple[str, str]]:
        """(job id, company) of every job still to be cancelled."""
        return await self.db.read(runs.jobs_to_cancel)

    async def job_cancel_confirmed(self, job_id: str) -> None:
        await self.db.write(lambda conn: runs.forget_job_to_cancel(conn, job_id))

    async def job_request(self, run_id: str, index: int) -> Json:
        return await self.db.read(lambda conn: runs.job_request(conn, run_id, index))

    async def active_runs(self) -> list[tuple[str, str]]:
        return await self.db.read(runs.active_run_ids)

    async def events_after(
        self, company: str, run_id: str, after_seq: int, limit: int
    ) -> list[RunEvent]:
        return await self.db.read(
            lambda conn: runs.events_after(conn, company, run_id, after_seq, limit)
        )

    async def events_after_global(
        self, company: str, filt: WatchFilter, after: int, limit: int
    ) -> list[RunEvent]:
        return await self.db.read(
            lambda conn: runs.events_after_global(conn, company, filt, after, limit)
        )

    async def last_global_seq(self) -> int:
        return await self.db.read(runs.last_global_seq)
