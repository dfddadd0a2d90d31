"""The SQLite store: the async face of the store modules."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from workflowd.domain.workflow import NewWorkflowVersion, Workflow, WorkflowFilter
from workflowd.store import workflows
from workflowd.store.db import Database
from workflowd.store.paging import page_size


class SqliteStore:
    """Workflows, runs and events in one SQLite file (WAL, one group-committing writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = Database(path)

    async def open(self) -> None:
        await self.db.open()

    async def aclose(self) -> None:
        await self.db.aclose()

    async def save_version(self, new: NewWorkflowVersion) -> tuple[Workflow, bool]:
        return await self.db.write(lambda conn: workflows.save_version(conn, new))

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
    ) -> tuple[list[Workflow], str]:
        n = page_size(size)
        return await self.db.read(lambda conn: workflows.list_page(conn, company, filt, n, token))

    async def archive_workflow(self, company: str, workflow_id: str, now: datetime) -> Workflow:
        return await self.db.write(lambda conn: workflows.archive(conn, company, workflow_id, now))
