"""Workflow and version persistence (synchronous; runs on the store's threads)."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import datetime

from workflowd.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from workflowd.domain.ids import shown
from workflowd.domain.page import Page
from workflowd.domain.workflow import (
    NewWorkflowVersion,
    Workflow,
    WorkflowFilter,
    WorkflowStatus,
)
from workflowd.store.codec import dump, load, parse_ts, parse_ts_required, ts
from workflowd.store.query import Select, keyset_page


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def save_version(conn: sqlite3.Connection, new: NewWorkflowVersion) -> tuple[Workflow, bool]:
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
                workflow_id,
                new.company,
                new.namespace,
                new.name,
                new.version,
                dump(list(new.tags)),
                WorkflowStatus.ACTIVE.value,
                ts(new.now),
                ts(new.now),
            ),
        )
        _insert_version(conn, workflow_id, new, ordinal=1)
        return _load(conn, new.company, workflow_id, None), True
    workflow_id = row["id"]
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
        return _load(conn, new.company, workflow_id, new.version), False
    ordinal = conn.execute(
        "SELECT MAX(ordinal) FROM workflow_versions WHERE workflow_id = ?", (workflow_id,)
    ).fetchone()[0]
    _insert_version(conn, workflow_id, new, ordinal=ordinal + 1)
    tags = dump(list(new.tags)) if new.tags else row["tags"]
    conn.execute(
        "UPDATE workflows SET current_version = ?, tags = ?, updated_at = ? WHERE id = ?",
        (new.version, tags, ts(new.now), workflow_id),
    )
    return _load(conn, new.company, workflow_id, None), True


def _insert_version(
    conn: sqlite3.Connection, workflow_id: str, new: NewWorkflowVersion, *, ordinal: int
) -> None:
    conn.execute(
        "INSERT INTO workflow_versions (workflow_id, version, ordinal, specification,"
        " spec_sha256, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (
            workflow_id,
            new.version,
            ordinal,
            new.specification,
            sha256(new.specification),
            ts(new.now),
        ),
    )


def find_id(conn: sqlite3.Connection, company: str, namespace: str, name: str) -> str:
    row = conn.execute(
        "SELECT id FROM workflows WHERE company = ? AND namespace = ? AND name = ?",
        (company, namespace, name),
    ).fetchone()
    if row is None:
        raise NotFound(f"workflow {namespace}/{name} not found")
    return str(row["id"])


def get(conn: sqlite3.Connection, company: str, workflow_id: str, version: str | None) -> Workflow:
    return _load(conn, company, workflow_id, version)


def _load(
    conn: sqlite3.Connection, company: str, workflow_id: str, version: str | None
) -> Workflow:
    row = conn.execute(
        "SELECT * FROM workflows WHERE id = ? AND company = ?", (workflow_id, company)
    ).fetchone()
    if row is None:
        raise NotFound(f"workflow {workflow_id} not found")
    return workflows_of(conn, [row], version)[0]


def workflows_of(
    conn: sqlite3.Connection, rows: Sequence[sqlite3.Row], version: str | None = None
) -> list[Workflow]:
    """The workflows of these rows (at `version`, else at their current one), with two more
    queries for the lot: their version names, and the specification of the wanted version."""
    ids = [row["id"] for row in rows]
    names: dict[str, list[str]] = {workflow_id: [] for workflow_id in ids}
    specs: dict[str, str] = {}
    marks = ", ".join("?" * len(ids))
    found = conn.execute(
        f"SELECT workflow_id, version FROM workflow_versions WHERE workflow_id IN ({marks})"
        " ORDER BY workflow_id, ordinal",
        ids,
    )
    for row in found.fetchall():
        names[row["workflow_id"]].append(row["version"])
    if version is None:
        found = conn.execute(
            "SELECT v.workflow_id, v.specification FROM workflow_versions v JOIN workflows w"
            f" ON w.id = v.workflow_id AND v.version = w.current_version WHERE w.id IN ({marks})",
            ids,
        )
    else:
        found = conn.execute(
            "SELECT workflow_id, specification FROM workflow_versions"
            f" WHERE version = ? AND workflow_id IN ({marks})",
            [version, *ids],
        )
    specs = {row["workflow_id"]: row["specification"] for row in found.fetchall()}
    return [_workflow(row, version, names[row["id"]], specs.get(row["id"])) for row in rows]


def _workflow(
    row: sqlite3.Row, version: str | None, versions: list[str], spec: str | None
) -> Workflow:
    wanted = version or row["current_version"]
    if spec is None:
        newest = ", ".join(versions[-10:])
        raise NotFound(
            f"workflow {row['namespace']}/{row['name']} has no version {shown(wanted)}"
            f" (its newest: {newest})"
        )
    tags = load(row["tags"])
    return Workflow(
        id=row["id"],
        company=row["company"],
        namespace=row["namespace"],
        name=row["name"],
        version=wanted,
        current_version=row["current_version"],
        versions=tuple(versions),
        specification=spec,
        tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
        status=WorkflowStatus(row["status"]),
        created_at=parse_ts_required(row["created_at"]),
        updated_at=parse_ts_required(row["updated_at"]),
        archived_at=parse_ts(row["archived_at"]),
    )


def list_page(
    conn: sqlite3.Connection, company: str, filt: WorkflowFilter, size: int, token: str
) -> Page[Workflow]:
    filter_key = f"{company}|{filt.namespace}|{filt.tag}|{filt.status or ''}"
    select = (
        Select("workflows", "company = ?", company)
        .where_if(filt.namespace, "namespace = ?", filt.namespace)
        .where_if(filt.status, "status = ?", filt.status.value if filt.status else None)
        .where_if(
            filt.tag,
            "EXISTS (SELECT 1 FROM json_each(workflows.tags) WHERE value = ?)",
            filt.tag,
        )
    )
    return keyset_page(conn, select, size, token, filter_key, lambda rows: workflows_of(conn, rows))


def archive(conn: sqlite3.Connection, company: str, workflow_id: str, now: datetime) -> Workflow:
    current = _load(conn, company, workflow_id, None)
    if current.status != WorkflowStatus.ARCHIVED:
        conn.execute(
            "UPDATE workflows SET status = ?, archived_at = ?, updated_at = ? WHERE id = ?",
            (WorkflowStatus.ARCHIVED.value, ts(now), ts(now), workflow_id),
        )
    return _load(conn, company, workflow_id, None)
