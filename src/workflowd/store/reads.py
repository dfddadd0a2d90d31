"""Every read of the store, as async queries on a `Reader` (a pooled connection holding one
snapshot): a slow listing occupies one connection and never holds up another caller's read.
A page of N runs, workflows or schedules costs a constant number of queries, not N + 1."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from workflowd.domain.errors import NotFound
from workflowd.domain.json import Json
from workflowd.domain.page import Page
from workflowd.domain.run import Run, RunEvent, RunFilter, WatchFilter
from workflowd.domain.schedule import FireDecision, WorkflowSchedule
from workflowd.domain.workflow import Workflow, WorkflowFilter, WorkflowHead, WorkflowStatus
from workflowd.store import rows
from workflowd.store.codec import load, parse_ts_required, ts
from workflowd.store.paging import PageTokens
from workflowd.store.query import Reader, Select, keyset_page
from workflowd.store.sql import marks

RECENT_DECISIONS = 20
# Parameters per statement stay well below SQLite's and PostgreSQL's limits.
_IN_CHUNK = 500


async def _in(
    reader: Reader,
    sql: str,
    ids: Sequence[str],
    before: Sequence[object] = (),
    after: Sequence[object] = (),
) -> list[Any]:
    """`sql` with `{}` standing for an IN list, run over `ids` in chunks; `before` and `after`
    are the parameters written before and after the list."""
    found: list[Any] = []
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        found += await reader.fetch(sql.format(marks(len(chunk))), (*before, *chunk, *after))
    return found


# --- runs ----------------------------------------------------------------------------------


async def get_run(reader: Reader, company: str, run_id: str) -> Run:
    found = await reader.fetch("SELECT * FROM runs WHERE id = ? AND company = ?", (run_id, company))
    if not found:
        raise NotFound(f"run {run_id} not found")
    return (await runs_of(reader, found))[0]


async def runs_by_id(reader: Reader, run_ids: Sequence[str]) -> list[Run]:
    """The runs with these ids, in that order (the store's own follow-up to a write)."""
    found = await _in(reader, "SELECT * FROM runs WHERE id IN ({})", run_ids)
    by_id = {run.id: run for run in await runs_of(reader, found)}
    return [by_id[run_id] for run_id in run_ids]


async def runs_of(reader: Reader, found: Sequence[Any]) -> list[Run]:
    """The runs of these rows, with their tasks read in one query for the lot."""
    ids = [row["id"] for row in found]
    tasks: dict[str, list[Any]] = {run_id: [] for run_id in ids}
    for task in await _in(
        reader, "SELECT * FROM task_instances WHERE run_id IN ({}) ORDER BY run_id, ord", ids
    ):
        tasks[task["run_id"]].append(task)
    return [rows.run(row, tasks[row["id"]]) for row in found]


async def latest_runs_at(
    reader: Reader, company: str, workflow_id: str, instants: Sequence[datetime]
) -> dict[datetime, Run]:
    """Each instant's latest run (its last re-run, else its run), where it has one."""
    found = await _in(
        reader,
        "SELECT * FROM runs WHERE company = ? AND workflow_id = ? AND scheduled_at IN ({})"
        " ORDER BY seq",
        [str(ts(t)) for t in instants],
        before=(company, workflow_id),
    )
    latest = {row["scheduled_at"]: row for row in found}
    return {run.scheduled_at: run for run in await runs_of(reader, list(latest.values()))
            if run.scheduled_at is not None}  # fmt: skip


async def list_runs(
    reader: Reader,
    company: str,
    filt: RunFilter,
    size: int,
    token: str,
    tokens: PageTokens,
    *,
    tasks: bool = True,
) -> Page[Run]:
    """A page of runs, newest first; without `tasks`, their task instances are not read (a
    listing that shows runs only)."""
    filter_key = "|".join(
        [
            company,
            filt.workflow_id,
            ",".join(sorted(filt.statuses)),
            str(ts(filt.created_after)),
            str(ts(filt.created_before)),
            filt.namespace,
            filt.id_prefix,
            ",".join(sorted(filt.triggers)),
        ]
    )
    select = (
        Select("runs", "company = ?", company)
        .where_if(filt.workflow_id, "workflow_id = ?", filt.workflow_id)
        .where_if(filt.namespace, "namespace = ?", filt.namespace)
        .where_in("status", (s.value for s in filt.statuses))
        .where_in("trigger", (t.value for t in filt.triggers))
        .where_if(filt.created_after, "created_at > ?", ts(filt.created_after))
        .where_if(filt.created_before, "created_at < ?", ts(filt.created_before))
    )
    if filt.id_prefix:
        # A range on the unique index of ids, which compare byte-wise in both dialects.
        following = filt.id_prefix[:-1] + chr(ord(filt.id_prefix[-1]) + 1)
        select.where("id >= ? AND id < ?", filt.id_prefix, following)

    async def build(found: Sequence[Any]) -> list[Run]:
        if tasks:
            return await runs_of(reader, found)
        return [rows.run(row, ()) for row in found]

    return await keyset_page(reader, select, size, token, filter_key, build, tokens)


async def job_request(reader: Reader, run_id: str, key: str) -> Json:
    found = await reader.fetch(
        "SELECT job_request FROM task_instances WHERE run_id = ? AND key = ?", (run_id, key)
    )
    return load(found[0]["job_request"]) if found else None


async def jobs_to_cancel(reader: Reader) -> list[tuple[str, str]]:
    """(job id, company) of every job still to be cancelled."""
    found = await reader.fetch(
        "SELECT j.job_id, r.company FROM jobs_to_cancel j JOIN runs r ON r.id = j.run_id"
        " ORDER BY j.since"
    )
    return [(row["job_id"], row["company"]) for row in found]


async def events_after(
    reader: Reader, company: str, run_id: str, after_seq: int, limit: int
) -> list[RunEvent]:
    found = await reader.fetch(
        "SELECT * FROM run_events WHERE run_id = ? AND company = ? AND seq > ?"
        " ORDER BY seq LIMIT ?",
        (run_id, company, after_seq, limit),
    )
    return [rows.event(row) for row in found]


async def events_after_global(
    reader: Reader, company: str, filt: WatchFilter, after: int, limit: int
) -> list[RunEvent]:
    """The company's events after its own sequence number `after`."""
    select = (
        Select("run_events", "company = ? AND company_seq > ?", company, after)
        .where_if(filt.workflow_id, "workflow_id = ?", filt.workflow_id)
        .where_if(filt.namespace, "namespace = ?", filt.namespace)
        .where_in("run_status", (s.value for s in filt.statuses))
    )
    return [rows.event(row) for row in await select.fetch(reader, "company_seq", limit)]


async def events_since(reader: Reader, after: int, limit: int) -> list[tuple[int, RunEvent]]:
    """Every company's events after the log position `after`, with their positions."""
    found = await reader.fetch(
        "SELECT * FROM run_events WHERE global_seq > ? ORDER BY global_seq LIMIT ?",
        (after, limit),
    )
    return [(int(row["global_seq"]), rows.event(row)) for row in found]


async def log_position(reader: Reader) -> int:
    found = await reader.fetch("SELECT MAX(global_seq) AS last FROM run_events")
    return int(found[0]["last"] or 0)


async def last_company_seq(reader: Reader, company: str) -> int:
    found = await reader.fetch(
        "SELECT last_seq FROM company_sequences WHERE company = ?", (company,)
    )
    return int(found[0]["last_seq"]) if found else 0


async def pruned_through(reader: Reader, company: str) -> int:
    """The company's newest event that was deleted (0: none was)."""
    found = await reader.fetch(
        "SELECT pruned_through FROM company_sequences WHERE company = ?", (company,)
    )
    return int(found[0]["pruned_through"]) if found else 0


# --- workflows -----------------------------------------------------------------------------


async def find_workflow_id(reader: Reader, company: str, namespace: str, name: str) -> str:
    found = await reader.fetch(
        "SELECT id FROM workflows WHERE company = ? AND namespace = ? AND name = ?",
        (company, namespace, name),
    )
    if not found:
        raise NotFound(f"workflow {namespace}/{name} not found")
    return str(found[0]["id"])


async def workflow_head(
    reader: Reader, company: str, workflow_id: str, namespace: str, name: str, version: str
) -> WorkflowHead | None:
    """The workflow by id, or else by namespace and name, at `version` (empty: its current
    one), in one statement; None when there is no such workflow or version."""
    if version:
        columns = (
            "SELECT w.id, w.company, w.namespace, w.name, v.version, w.status FROM workflows w"
            " JOIN workflow_versions v ON v.workflow_id = w.id AND v.version = ?"
        )
        args: tuple[str, ...] = (version,)
    else:
        columns = (
            "SELECT w.id, w.company, w.namespace, w.name, w.current_version AS version,"
            " w.status FROM workflows w"
        )
        args = ()
    if workflow_id:
        where, args = " WHERE w.id = ? AND w.company = ?", (*args, workflow_id, company)
    else:
        where = " WHERE w.company = ? AND w.namespace = ? AND w.name = ?"
        args = (*args, company, namespace, name)
    found = await reader.fetch(columns + where, args)
    if not found:
        return None
    row = found[0]
    return WorkflowHead(
        row["id"], row["company"], row["namespace"], row["name"], row["version"],
        WorkflowStatus(row["status"]),
    )  # fmt: skip


async def specification(reader: Reader, workflow_id: str, version: str) -> str | None:
    found = await reader.fetch(
        "SELECT specification FROM workflow_versions WHERE workflow_id = ? AND version = ?",
        (workflow_id, version),
    )
    return str(found[0]["specification"]) if found else None


async def get_workflow(
    reader: Reader, company: str, workflow_id: str, version: str | None = None
) -> Workflow:
    found = await reader.fetch(
        "SELECT * FROM workflows WHERE id = ? AND company = ?", (workflow_id, company)
    )
    if not found:
        raise NotFound(f"workflow {workflow_id} not found")
    return (await workflows_of(reader, found, version))[0]


async def workflows_of(
    reader: Reader, found: Sequence[Any], version: str | None = None
) -> list[Workflow]:
    """The workflows of these rows (at `version`, else at their current one), with two more
    queries for the lot: their version names, and the specification of the wanted version."""
    ids = [row["id"] for row in found]
    names: dict[str, list[str]] = {workflow_id: [] for workflow_id in ids}
    listed = await _in(
        reader,
        "SELECT workflow_id, version FROM workflow_versions WHERE workflow_id IN ({})"
        " ORDER BY workflow_id, ordinal",
        ids,
    )
    for row in listed:
        names[row["workflow_id"]].append(row["version"])
    if version is None:
        specs = await _in(
            reader,
            "SELECT v.workflow_id, v.specification FROM workflow_versions v JOIN workflows w"
            " ON w.id = v.workflow_id AND v.version = w.current_version WHERE w.id IN ({})",
            ids,
        )
    else:
        specs = await _in(
            reader,
            "SELECT workflow_id, specification FROM workflow_versions"
            " WHERE version = ? AND workflow_id IN ({})",
            ids,
            before=(version,),
        )
    spec = {row["workflow_id"]: row["specification"] for row in specs}
    return [rows.workflow(row, version, names[row["id"]], spec.get(row["id"])) for row in found]


async def list_workflows(
    reader: Reader,
    company: str,
    filt: WorkflowFilter,
    size: int,
    token: str,
    tokens: PageTokens,
) -> Page[Workflow]:
    filter_key = f"{company}|{filt.namespace}|{filt.tag}|{filt.status or ''}|{filt.name}"
    select = (
        Select("workflows", "company = ?", company)
        .where_if(filt.namespace, "namespace = ?", filt.namespace)
        .where_if(filt.name, "name = ?", filt.name)
        .where_if(filt.status, "status = ?", filt.status.value if filt.status else None)
        .where_if(filt.tag, reader.dialect.has_tag, filt.tag)
    )
    return await keyset_page(
        reader, select, size, token, filter_key, lambda found: workflows_of(reader, found), tokens
    )


# --- schedules -----------------------------------------------------------------------------


async def get_schedule(reader: Reader, company: str, workflow_id: str) -> WorkflowSchedule:
    found = await reader.fetch(
        "SELECT * FROM schedules WHERE workflow_id = ? AND company = ?", (workflow_id, company)
    )
    if not found:
        raise no_schedule(workflow_id)
    return (await schedules_of(reader, found))[0]


def no_schedule(workflow_id: str) -> NotFound:
    """Said alike of a schedule that does not exist and of another company's."""
    return NotFound(f"workflow {workflow_id} has no schedule: activate it with ScheduleWorkflow")


async def schedule_of(reader: Reader, workflow_id: str) -> WorkflowSchedule | None:
    found = await reader.fetch("SELECT * FROM schedules WHERE workflow_id = ?", (workflow_id,))
    return (await schedules_of(reader, found))[0] if found else None


async def schedules_of(reader: Reader, found: Sequence[Any]) -> list[WorkflowSchedule]:
    """The schedules of these rows with their recent decisions, read in one query for the lot."""
    ids = [row["workflow_id"] for row in found]
    recent: dict[str, list[FireDecision]] = {workflow_id: [] for workflow_id in ids}
    decided = await _in(
        reader,
        "SELECT * FROM (SELECT d.*, ROW_NUMBER() OVER"
        " (PARTITION BY workflow_id ORDER BY id DESC) AS n FROM schedule_decisions d"
        " WHERE workflow_id IN ({})) AS recent WHERE n <= ? ORDER BY id DESC",
        ids,
        after=(RECENT_DECISIONS,),
    )
    for row in decided:
        recent[row["workflow_id"]].append(rows.decision(row))
    return [rows.schedule(row, recent[row["workflow_id"]]) for row in found]


async def list_schedules(
    reader: Reader, company: str, namespace: str, size: int, token: str, tokens: PageTokens
) -> Page[WorkflowSchedule]:
    filter_key = f"schedules|{company}|{namespace}"
    select = Select("schedules", "company = ?", company).where_if(
        namespace, "namespace = ?", namespace
    )
    return await keyset_page(
        reader, select, size, token, filter_key, lambda found: schedules_of(reader, found), tokens
    )


async def due_schedules(reader: Reader) -> list[tuple[str, datetime]]:
    """Every active schedule and its next instant."""
    found = await reader.fetch(
        "SELECT workflow_id, next_fire_at FROM schedules"
        " WHERE active = 1 AND next_fire_at IS NOT NULL"
    )
    return [(row["workflow_id"], parse_ts_required(row["next_fire_at"])) for row in found]
