"""Rows → domain values: pure conversions shared by every query that reads them."""

from __future__ import annotations

from collections.abc import Sequence

from workflowd.domain.definition import Schedule
from workflowd.domain.errors import NotFound
from workflowd.domain.ids import shown
from workflowd.domain.run import (
    Problem,
    Run,
    RunEvent,
    RunEventType,
    RunStatus,
    RunTrigger,
    TaskRun,
    TaskStatus,
)
from workflowd.domain.schedule import (
    CatchupPolicy,
    FireDecision,
    FireOutcome,
    OverlapPolicy,
    SchedulePolicies,
    WorkflowSchedule,
)
from workflowd.domain.workflow import Workflow, WorkflowStatus
from workflowd.store.codec import load, parse_ts, parse_ts_required
from workflowd.store.sql import Row


def problem(raw: str | None) -> Problem | None:
    data = load(raw)
    return Problem.from_json(data) if isinstance(data, dict) else None


def run(row: Row, tasks: Sequence[Row]) -> Run:
    context = load(row["context"])
    return Run(
        id=row["id"],
        company=row["company"],
        workflow_id=row["workflow_id"],
        namespace=row["namespace"],
        name=row["name"],
        version=row["version"],
        status=RunStatus(row["status"]),
        trigger=RunTrigger(row["trigger"]),
        input=load(row["input"]),
        created_at=parse_ts_required(row["created_at"]),
        tasks=tuple(task(t) for t in tasks),
        context=context if isinstance(context, dict) else {},
        output=load(row["output"]),
        error=problem(row["error"]),
        started_at=parse_ts(row["started_at"]),
        ended_at=parse_ts(row["ended_at"]),
        scheduled_at=parse_ts(row["scheduled_at"]),
        idempotency_key=row["idempotency_key"],
        after_run_id=row["after_run_id"],
        cancel_reason=row["cancel_reason"],
        cursor=cursor if isinstance(cursor := load(row["cursor"]), dict) else None,
        rerun_of=row["rerun_of"],
        replay_until=row["replay_until"],
    )


def _ints(raw: str) -> tuple[int, ...]:
    value = load(raw) if raw else []
    return tuple(i for i in value if isinstance(i, int)) if isinstance(value, list) else ()


def task(row: Row) -> TaskRun:
    return TaskRun(
        key=row["key"],
        order=row["ord"],
        name=row["name"],
        kind=row["kind"],
        call=row["call"],
        reference=row["reference"],
        position=row["position"],
        iteration=_ints(row["iteration"]),
        attempt=row["attempt"],
        parent=row["parent"],
        status=TaskStatus(row["status"]),
        job_id=row["job_id"],
        input=load(row["input"]),
        output=load(row["output"]),
        error=problem(row["error"]),
        reason=row["reason"],
        started_at=parse_ts(row["started_at"]),
        ended_at=parse_ts(row["ended_at"]),
        wake_at=parse_ts(row["wake_at"]),
        reused=bool(row["reused"]),
    )


def event(row: Row) -> RunEvent:
    return RunEvent(
        run_id=row["run_id"],
        seq=row["seq"],
        # What the company sees: its own events' sequence, not the log's (`sequence.py`).
        global_seq=row["company_seq"],
        type=RunEventType(row["type"]),
        time=parse_ts_required(row["time"]),
        company=row["company"],
        workflow_id=row["workflow_id"],
        namespace=row["namespace"],
        run_status=RunStatus(row["run_status"]),
        task_index=row["task_index"],
        task_name=row["task_name"],
        task_status=TaskStatus(row["task_status"]) if row["task_status"] else None,
        job_id=row["job_id"],
        error=problem(row["error"]),
        reason=row["reason"],
        task_key=row["task_key"],
        task_reference=row["task_ref"],
        iteration=_ints(row["iteration"]),
        attempt=row["attempt"],
        until=parse_ts(row["until"]),
    )


def workflow(row: Row, version: str | None, versions: list[str], spec: str | None) -> Workflow:
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


def decision(row: Row) -> FireDecision:
    return FireDecision(
        instant=parse_ts_required(row["instant"]),
        outcome=FireOutcome(row["outcome"]),
        reason=row["reason"],
        decided_at=parse_ts_required(row["decided_at"]),
        run_id=row["run_id"],
    )


def schedule(row: Row, decisions: Sequence[FireDecision] = ()) -> WorkflowSchedule:
    return WorkflowSchedule(
        workflow_id=row["workflow_id"],
        company=row["company"],
        namespace=row["namespace"],
        name=row["name"],
        version=row["version"],
        spec=Schedule(row["cron"], row["timezone"], row["every_s"]),
        policies=SchedulePolicies(
            OverlapPolicy(row["overlap"]), CatchupPolicy(row["catchup"]), row["catchup_window_s"]
        ),
        active=bool(row["active"]),
        anchor=parse_ts_required(row["anchor"]),
        next_fire_at=parse_ts(row["next_fire_at"]),
        last_fire_at=parse_ts(row["last_fire_at"]),
        created_at=parse_ts_required(row["created_at"]),
        updated_at=parse_ts_required(row["updated_at"]),
        input=load(row["input"]),
        decisions=tuple(decisions),
    )
