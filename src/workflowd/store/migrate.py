"""Applying the forward-only migrations (`migrations.py`) to a store, in its own dialect."""

from __future__ import annotations

import logging

from workflowd.domain.errors import WorkflowdError
from workflowd.store.migrations import MIGRATIONS
from workflowd.store.sql import Conn

log = logging.getLogger("workflowd.store")


def migrate(conn: Conn, begin: str, where: str) -> None:
    """Apply every migration not yet applied, each in one transaction; refuse a store whose
    schema is newer than this workflowd knows."""
    dialect = conn.dialect
    conn.execute(
        dialect.ddl(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
            " applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
    )
    applied = {
        row["version"] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()
    }
    newest = max(applied, default=0)
    if newest > len(MIGRATIONS):
        raise WorkflowdError(
            f"the store at {where} has schema version {newest}, newer than this workflowd "
            f"knows ({len(MIGRATIONS)}): upgrade workflowd"
        )
    for version, script in enumerate(MIGRATIONS, start=1):
        if version in applied:
            continue
        conn.execute(begin)
        try:
            for step in script:
                for statement in (
                    (step,) if isinstance(step, str) else step.statements(dialect.name)
                ):
                    conn.execute(dialect.ddl(statement))
            conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("applied store migration %d", version)
