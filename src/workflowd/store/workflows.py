"""Workflow and version writes (synchronous; they run on the store's writer). Reads are in
`reads.py`."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from workflowd.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from workflowd.domain.workflow import NewWorkflowVersion, WorkflowStatus
from workflowd.store.codec import dump, load, ts
from workflowd.store.sql import Conn


@dataclass(frozen=True, slots=True)
class Saved:
    workflow_id: str
    version: str | None
    """The version to show (None: the current one)."""
    created: bool
    current: bool
    """Whether the stored version became the current one."""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def save_version(conn: Conn, new: NewWorkflowVersion) -> Saved:
    row = conn.execute(
        "SELECT * FROM workflows WHERE company = ? AND namespace = ? AND name = ?",
        (new.company, new.namespace, new.name),
    ).fetchone()
    if row is None:
        workflow_id = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO workflows (id, company, namespace, name, current_version, tags, status,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                workflow_id, new.company, new.namespace, new.name, new.version,
                dump(list(new.tags)), WorkflowStatus.ACTIVE.value, ts(new.now), ts(new.now),
            ),
        )  # fmt: skip
        _insert_version(conn, workflow_id, new, ordinal=1)
        return Saved(workflow_id, None, created=True, current=True)
    workflow_id = str(row["id"])
    if row["status"] == WorkflowStatus.ARCHIVED:
        raise FailedPrecondition(
            f"workflow {new.namespace}/{new.name} is archived: it keeps its history but accepts "
            "no new versions"
        )
    existing = conn.execute(
        "SELECT spec_sha256 FROM workflow_versions WHERE workflow_id = ? AND version = ?",
        (workflow_id, new.version),
    ).fetchone()
    if existing is not None:
        if existing["spec_sha256"] != sha256(new.specification):
            raise AlreadyExists(
                f"workflow {new.namespace}/{new.name} already has version {new.version} with a "
                "different specification: bump document.version to store the change"
            )
        if new.tags and load(row["tags"]) != list(new.tags):
            # Tags belong to the workflow, not to a version: given ones replace them.
            conn.execute(
                "UPDATE workflows SET tags = ?, updated_at = ? WHERE id = ?",
                (dump(list(new.tags)), ts(new.now), workflow_id),
            )
        return Saved(workflow_id, new.version, created=False, current=False)
    ordinal = conn.execute(
        "SELECT MAX(ordinal) AS last FROM workflow_versions WHERE workflow_id = ?", (workflow_id,)
    ).fetchone()["last"]
    _insert_version(conn, workflow_id, new, ordinal=ordinal + 1)
    tags = dump(list(new.tags)) if new.tags else row["tags"]
    conn.execute(
        "UPDATE workflows SET current_version = ?, tags = ?, updated_at = ? WHERE id = ?",
        (new.version, tags, ts(new.now), workflow_id),
    )
    return Saved(workflow_id, None, created=True, current=True)


def _insert_version(conn: Conn, workflow_id: str, new: NewWorkflowVersion, *, ordinal: int) -> None:
    conn.execute(
        "INSERT INTO workflow_versions (workflow_id, version, ordinal, specification,"
        " spec_sha256, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (
            workflow_id, new.version, ordinal, new.specification, sha256(new.specification),
            ts(new.now),
        ),
    )  # fmt: skip


def archive(conn: Conn, company: str, workflow_id: str, now: datetime) -> None:
    row = conn.execute(
        "SELECT status FROM workflows WHERE id = ? AND company = ?", (workflow_id, company)
    ).fetchone()
    if row is None:
        raise NotFound(f"workflow {workflow_id} not found")
    if row["status"] != WorkflowStatus.ARCHIVED:
        conn.execute(
            "UPDATE workflows SET status = ?, archived_at = ?, updated_at = ? WHERE id = ?",
            (WorkflowStatus.ARCHIVED.value, ts(now), ts(now), workflow_id),
        )
