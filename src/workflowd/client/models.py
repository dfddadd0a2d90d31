"""What the client returns: plain frozen dataclasses and string enums, read from the daemon's
protobuf messages here and nowhere else (no protobuf type is part of the client's surface).

JSON values (a run's input and output, a task's output) are Python data as `json.loads` makes
it: dicts, lists, strings, ints, floats, booleans and None.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from workflowd.api.client import to_dict
from workflowd.v1 import workflow_service_pb2 as pb

JsonValue = Any
"""A JSON value as Python data."""


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class Trigger(StrEnum):
    """What started a run."""

    MANUAL = "manual"
    SCHEDULE = "schedule"
    BACKFILL = "backfill"
    RERUN = "rerun"


class EventType(StrEnum):
    """What a RunEvent records."""

    RUN_CREATED = "run_created"
    RUN_STARTED = "run_started"
    TASK_STARTED = "task_started"
    TASK_JOB_SUBMITTED = "task_job_submitted"
    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    TASK_CANCELLED = "task_cancelled"
    TASK_SKIPPED = "task_skipped"
    RUN_CANCELLING = "run_cancelling"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"
    TASK_WAITING = "task_waiting"
    TASK_RETRYING = "task_retrying"
    TASK_ERROR_CAUGHT = "task_error_caught"

    @property
    def ends_run(self) -> bool:
        return self in (EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED)


@dataclass(frozen=True, slots=True)
class Problem:
    """An RFC 7807 problem: the DSL's error `type`, `status`, `title`, the `detail` (a job's
    own messages) and `instance`, the faulting task's JSON pointer."""

    type: str
    status: int
    title: str
    detail: str
    instance: str


@dataclass(frozen=True, slots=True)
class Task:
    """One task instance of a run: the task at `reference`, in the loop iterations
    `iteration`, at retry `attempt`."""

    name: str
    reference: str
    key: str
    kind: str
    call: str
    status: TaskStatus
    job_id: str
    input: JsonValue
    output: JsonValue
    error: Problem | None
    started_at: datetime | None
    ended_at: datetime | None
    iteration: tuple[int, ...]
    attempt: int
    parent: str
    reason: str
    reused: bool
    """A re-run's instance replayed from the run it re-runs: its outcome, no job sent."""


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    workflow_id: str
    namespace: str
    name: str
    version: str
    status: RunStatus
    trigger: Trigger
    input: JsonValue
    output: JsonValue
    context: dict[str, JsonValue]
    error: Problem | None
    tasks: tuple[Task, ...]
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    scheduled_at: datetime | None
    cancel_reason: str
    rerun_of: str
    """The run this one re-runs ("" for any other run)."""

    @property
    def workflow(self) -> str:
        """`namespace/name`."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One durable state change of a run; `seq` counts from 1 per run."""

    run_id: str
    seq: int
    global_seq: int
    type: EventType
    time: datetime
    workflow_id: str
    run_status: RunStatus
    task_name: str
    task_key: str
    task_reference: str
    task_status: TaskStatus | None
    job_id: str
    error: Problem | None
    reason: str
    iteration: tuple[int, ...]
    attempt: int
    until: datetime | None


@dataclass(frozen=True, slots=True)
class Workflow:
    """A stored workflow at one of its versions; `specification` is that version's YAML,
    exactly as it was applied."""

    id: str
    namespace: str
    name: str
    version: str
    current_version: str
    versions: tuple[str, ...]
    specification: str
    tags: tuple[str, ...]
    archived: bool
    created_at: datetime
    updated_at: datetime


def _when(stamp: Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


def _problem(message: Any, present: bool) -> Problem | None:
    if not present:
        return None
    p: pb.Problem = message
    return Problem(p.type, p.status, p.title, p.detail, p.instance)


def _name(enum_name: str, prefix: str) -> str:
    return enum_name.removeprefix(prefix).lower()


def _task(t: pb.TaskRun, data: dict[str, Any]) -> Task:
    return Task(
        name=t.name,
        reference=t.reference,
        key=t.key,
        kind=t.kind,
        call=t.call,
        status=TaskStatus(_name(pb.TaskStatus.Name(t.status), "TASK_STATUS_")),
        job_id=t.job_id,
        input=data.get("input"),
        output=data.get("output"),
        error=_problem(t.error, t.HasField("error")),
        started_at=_when(t.started_at, t.HasField("started_at")),
        ended_at=_when(t.ended_at, t.HasField("ended_at")),
        iteration=tuple(t.iteration),
        attempt=t.attempt,
        parent=t.parent,
        reason=t.reason,
        reused=t.reused,
    )


def run_of(r: pb.Run) -> Run:
    data = to_dict(r)  # JSON values with integral numbers as ints
    return Run(
        id=r.id,
        workflow_id=r.workflow_id,
        namespace=r.namespace,
        name=r.name,
        version=r.version,
        status=RunStatus(_name(pb.RunStatus.Name(r.status), "RUN_STATUS_")),
        trigger=Trigger(_name(pb.RunTrigger.Name(r.trigger), "RUN_TRIGGER_")),
        input=data.get("input"),
        output=data.get("output"),
        context=data.get("context", {}),
        error=_problem(r.error, r.HasField("error")),
        tasks=tuple(_task(t, d) for t, d in zip(r.tasks, data.get("tasks", []), strict=True)),
        created_at=r.created_at.ToDatetime(tzinfo=UTC),
        started_at=_when(r.started_at, r.HasField("started_at")),
        ended_at=_when(r.ended_at, r.HasField("ended_at")),
        scheduled_at=_when(r.scheduled_at, r.HasField("scheduled_at")),
        cancel_reason=r.cancel_reason,
        rerun_of=r.rerun_of,
    )


def event_of(e: pb.RunEvent) -> RunEvent:
    task_status = None
    if e.task_status != pb.TASK_STATUS_UNSPECIFIED:
        task_status = TaskStatus(_name(pb.TaskStatus.Name(e.task_status), "TASK_STATUS_"))
    return RunEvent(
        run_id=e.run_id,
        seq=e.seq,
        global_seq=e.global_seq,
        type=EventType(_name(pb.RunEventType.Name(e.type), "RUN_EVENT_TYPE_")),
        time=e.time.ToDatetime(tzinfo=UTC),
        workflow_id=e.workflow_id,
        run_status=RunStatus(_name(pb.RunStatus.Name(e.run_status), "RUN_STATUS_")),
        task_name=e.task_name,
        task_key=e.task_key,
        task_reference=e.task_reference,
        task_status=task_status,
        job_id=e.job_id,
        error=_problem(e.error, e.HasField("error")),
        reason=e.reason,
        iteration=tuple(e.iteration),
        attempt=e.attempt,
        until=_when(e.until, e.HasField("until")),
    )


def workflow_of(w: pb.Workflow) -> Workflow:
    return Workflow(
        id=w.id,
        namespace=w.namespace,
        name=w.name,
        version=w.version,
        current_version=w.current_version,
        versions=tuple(w.versions),
        specification=w.specification,
        tags=tuple(w.tags),
        archived=w.status == pb.WORKFLOW_STATUS_ARCHIVED,
        created_at=w.created_at.ToDatetime(tzinfo=UTC),
        updated_at=w.updated_at.ToDatetime(tzinfo=UTC),
    )
