"""Workflow and version persistence (synchronous; runs on the store's threads)."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from datetime import datetime

from workflowd.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from workflowd.domain.page import Page
from workflowd.domain.workflow import (
    NewWorkflowVersion,
    Workflow,
    WorkflowFilter,
    WorkflowStatus,
)
from workflowd.store.codec import dump, load, parse_ts, parse_ts_required, ts
from workflowd.store.paging import decode_token, encode_token


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
    return _from_rows(conn, row, version)


def _from_rows(conn: sqlite3.Connection, row: sqlite3.Row, version: str | None) -> Workflow:
    versions = conn.execute(
        "SELECT version, specification FROM workflow_versions WHERE workflow_id = ?"
        " ORDER BY ordinal",
        (row["id"],),
    ).fetchall()
    wanted = version or row["current_version"]
    spec = next((v["specification"] for v in versions if v["version"] == wanted), None)
    if spec is None:
        raise NotFound(
            f"workflow {row['namespace']}/{row['name']} has no version {wanted!r}"
            f" (it has {', '.join(v['version'] for v in versions)})"
        )
    tags = load(row["tags"])
    return Workflow(
        id=row["id"],
        company=row["company"],
        namespace=row["namespace"],
        name=row["name"],
        version=wanted,
        current_version=row["current_version"],
        versions=tuple(v["version"] for v in versions),
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
    after = decode_token(token, filter_key)
    sql = "SELECT * FROM workflows WHERE company = ?"
    args: list[object] = [company]
    if after is not None:
        sql += " AND seq < ?"
        args.append(after)
    if filt.namespace:
        sql += " AND namespace = ?"
        args.append(filt.namespace)
    if filt.status is not None:
        sql += " AND status = ?"
        args.append(filt.status.value)
    if filt.tag:
        sql += " AND EXISTS (SELECT 1 FROM json_each(workflows.tags) WHERE value = ?)"
        args.append(filt.tag)
    sql += " ORDER BY seq DESC LIMIT ?"
    args.append(size + 1)
    rows = conn.execute(sql, args).fetchall()
    return Page(
        items=[_from_rows(conn, r, None) for r in rows[:size]],
        after=[encode_token(r["seq"], filter_key) for r in rows[:size]],
        more=len(rows) > size,
    )


def archive(conn: sqlite3.Connection, company: str, workflow_id: str, now: datetime) -> Workflow:
    current = _load(conn, company, workflow_id, None)
    if current.status != WorkflowStatus.ARCHIVED:
        conn.execute(
            "UPDATE workflows SET status = ?, archived_at = ?, updated_at = ? WHERE id = ?",
            (WorkflowStatus.ARCHIVED.value, ts(now), ts(now), workflow_id),
        )
    return _load(conn, company, workflow_id, None)
