"""The SQLite store: the default, one file in the data directory."""

from __future__ import annotations

from pathlib import Path

from workflowd.domain.quotas import Quotas
from workflowd.store.db import SqliteDatabase
from workflowd.store.face import Store


class SqliteStore(Store):
    """Workflows, runs and events in one SQLite file (WAL, one group-committing writer,
    aiosqlite readers)."""

    def __init__(self, path: Path, quotas: Quotas | None = None) -> None:
        super().__init__(SqliteDatabase(path), quotas)
        self.path = path
