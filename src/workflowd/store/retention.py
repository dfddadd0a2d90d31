"""Retention policies and sweeps (writes on the store's writer, reads on the pool).

A sweep looks at one workflow's runs in `seq` order (the index `runs_workflow_seq`), a bounded
batch per write, from where the previous batch stopped: active runs and runs too young are
stepped over, never read again in the same pass, and deletion (`deletion.py`) finds every row
by index. So each batch holds the writer for a few milliseconds, whatever the store holds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from workflowd.domain.retention import PolicyKey, RetentionPolicy, Sweep
from workflowd.domain.run import ACTIVE_RUN_STATUSES, RunStatus
from workflowd.store import deletion
from workflowd.store.codec import parse_ts, parse_ts_required, ts
from workflowd.store.query import Reader
from workflowd.store.sql import Conn

_ENDED = ", ".join(f"'{s.value}'" for s in RunStatus if s not in ACTIVE_RUN_STATUSES)


def set_policy(
    conn: Conn,
    company: str,
    namespace: str,
    workflow_id: str,
    policy: RetentionPolicy | None,
    now: datetime,
) -> None:
    conn.execute(
        "DELETE FROM retention_policies WHERE company = ? AND namespace = ? AND workflow_id = ?",
        (company, namespace, workflow_id),
    )
    if policy is not None:
        conn.execute(
            "INSERT INTO retention_policies (company, namespace, workflow_id, keep_s, keep_last,"
            " keep_failed_s, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                company, namespace, workflow_id, policy.keep_s, policy.keep_last,
                policy.keep_failed_s, ts(now),
            ),
        )  # fmt: skip


async def policies(reader: Reader, company: str) -> dict[PolicyKey, RetentionPolicy]:
    """The company's policies (every company's with `company` empty): a handful of rows."""
    sql = "SELECT * FROM retention_policies"
    found = await (
        reader.fetch(sql + " WHERE company = ?", (company,)) if company else reader.fetch(sql)
    )
    return {
        (row["company"], row["namespace"], row["workflow_id"]): RetentionPolicy(
            row["keep_s"], int(row["keep_last"]), row["keep_failed_s"]
        )
        for row in found
    }


async def workflows(
    reader: Reader, company: str, namespace: str, workflow_id: str, after: int, limit: int
) -> list[tuple[int, str, str, str]]:
    """(seq, id, company, namespace) of the workflows in scope after `after`, in `seq` order
    (every company's with `company` empty)."""
    clauses: list[str] = ["seq > ?"]
    args: list[object] = [after]
    for column, value in (("company", company), ("namespace", namespace), ("id", workflow_id)):
        if value:
            clauses.append(f"{column} = ?")
            args.append(value)
    found = await reader.fetch(
        f"SELECT seq, id, company, namespace FROM workflows WHERE {' AND '.join(clauses)}"
        " ORDER BY seq LIMIT ?",
        [*args, limit],
    )
    return [(int(r["seq"]), r["id"], r["company"], r["namespace"]) for r in found]


async def keep_last_bound(reader: Reader, workflow_id: str, keep_last: int) -> int | None:
    """The `seq` of the oldest of the workflow's `keep_last` newest ended runs (runs before it
    are beyond them); None when it has no more than that many, so nothing goes."""
    found = await reader.fetch(
        f"SELECT seq FROM runs WHERE workflow_id = ? AND status IN ({_ENDED})"
        " ORDER BY seq DESC LIMIT 1 OFFSET ?",
        (workflow_id, keep_last - 1),
    )
    return int(found[0]["seq"]) if found else None


def sweep(
    conn: Conn,
    company: str,
    workflow_id: str,
    policy: RetentionPolicy,
    now: datetime,
    *,
    after: int,
    before: int | None,
    limit: int,
    dry_run: bool,
) -> Sweep:
    """Look at up to `limit` runs of the workflow with `after` < seq (< `before`, the bound of
    `keep_last`) and delete those the policy lets go and no active run needs."""
    bound = "" if before is None else " AND seq < ?"
    found: list[Any] = conn.execute(
        "SELECT id, seq, status, created_at, ended_at FROM runs"
        f" WHERE workflow_id = ? AND seq > ?{bound} ORDER BY seq LIMIT ?",
        (workflow_id, after, *(() if before is None else (before,)), limit),
    ).fetchall()
    going = [
        row["id"]
        for row in found
        if RunStatus(row["status"]).terminal
        and policy.goes(RunStatus(row["status"]), parse_ts(row["ended_at"]), now)
    ]
    needed = deletion.needed(conn, going)
    going = [run_id for run_id in going if run_id not in needed]
    deleted = len(going) if dry_run else deletion.delete_runs(conn, company, going)
    cutoff = policy.newest_cutoff(now)
    done = len(found) < limit or (
        cutoff is not None and parse_ts_required(found[-1]["created_at"]) >= cutoff
    )
    return Sweep(deleted, len(needed), None if done else int(found[-1]["seq"]))
