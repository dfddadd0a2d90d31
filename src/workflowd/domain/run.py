"""Runs, tasks and their events. The state machines are data: a table of allowed moves and one
pure `transition()` that raises on an illegal one; every write checks it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from workflowd.domain.errors import FailedPrecondition
from workflowd.domain.json import Json, JsonObject


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _RUN_TERMINAL


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self not in (TaskStatus.PENDING, TaskStatus.RUNNING)


_RUN_TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
ACTIVE_RUN_STATUSES = tuple(s for s in RunStatus if s not in _RUN_TERMINAL)
"""The statuses of a run that has not ended (an executor owns it)."""

RUN_TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset(
        {RunStatus.RUNNING, RunStatus.CANCELLING, RunStatus.CANCELLED, RunStatus.FAILED}
    ),
    RunStatus.RUNNING: frozenset(
        {RunStatus.CANCELLING, RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}
    ),
    RunStatus.CANCELLING: frozenset({RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.COMPLETED}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}

TASK_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    # Only the tasks of runs started before task instances were created PENDING; an instance
    # starts RUNNING, and is SKIPPED when its `if` is false.
    TaskStatus.PENDING: frozenset(
        {TaskStatus.RUNNING, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED}
    ),
    TaskStatus.RUNNING: frozenset(
        {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.SKIPPED}
    ),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
    TaskStatus.SKIPPED: frozenset(),
}


class IllegalTransition(FailedPrecondition):
    """A write tried a move the state machine forbids. The engine checks a state before it
    moves it, so this means the state changed in between: a caller sees FAILED_PRECONDITION
    (the object is no longer in a state that allows the request), never INTERNAL."""


class RunTaken(Exception):
    """Another replica owns the run now (this one's lease ran out and the run was adopted): the
    write was refused, and this replica's executor of the run must stop without a word more."""


def transition_run(current: RunStatus, new: RunStatus) -> RunStatus:
    if new not in RUN_TRANSITIONS[current]:
        raise IllegalTransition(f"run cannot go from {current} to {new}")
    return new


def transition_task(current: TaskStatus, new: TaskStatus) -> TaskStatus:
    if new not in TASK_TRANSITIONS[current]:
        raise IllegalTransition(f"task cannot go from {current} to {new}")
    return new


class RunTrigger(StrEnum):
    MANUAL = "manual"
    SCHEDULE = "schedule"
    BACKFILL = "backfill"
    RERUN = "rerun"


class ErrorType(StrEnum):
    """The DSL's standard error types; the value is the last segment of the type URI."""

    CONFIGURATION = "configuration"
    VALIDATION = "validation"
    EXPRESSION = "expression"
    AUTHENTICATION = "authentication"
    AUTHORIZATION = "authorization"
    TIMEOUT = "timeout"
    COMMUNICATION = "communication"
    RUNTIME = "runtime"

    @property
    def uri(self) -> str:
        return f"https://serverlessworkflow.io/spec/1.0.0/errors/{self.value}"

    @property
    def default_status(self) -> int:
        return _DEFAULT_STATUS[self]


_DEFAULT_STATUS = {
    ErrorType.CONFIGURATION: 400,
    ErrorType.VALIDATION: 400,
    ErrorType.EXPRESSION: 400,
    ErrorType.AUTHENTICATION: 401,
    ErrorType.AUTHORIZATION: 403,
    ErrorType.TIMEOUT: 408,
    ErrorType.COMMUNICATION: 500,
    ErrorType.RUNTIME: 500,
}


@dataclass(frozen=True, slots=True)
class Problem:
    """RFC 7807 problem details, as the DSL uses them for errors."""

    type: str
    status: int
    title: str
    detail: str = ""
    instance: str = ""

    @classmethod
    def of(cls, kind: ErrorType, title: str, detail: str = "", instance: str = "") -> Problem:
        return cls(kind.uri, kind.default_status, title, detail, instance)

    def to_json(self) -> JsonObject:
        return {
            "type": self.type,
            "status": self.status,
            "title": self.title,
            "detail": self.detail,
            "instance": self.instance,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Json]) -> Problem:
        status = data.get("status")
        return cls(
            type=str(data.get("type", "")),
            status=status if isinstance(status, int) else 500,
            title=str(data.get("title", "")),
            detail=str(data.get("detail", "")),
            instance=str(data.get("instance", "")),
        )


@dataclass(frozen=True, slots=True)
class TaskRun:
    """One task instance: one execution of the task at `reference`, in the loop iterations
    `iteration` (outermost first) and the retry `attempt`; `key` names it within its run."""

    key: str
    order: int
    """Its place in the run's execution order (1, 2, …)."""
    name: str
    kind: str
    call: str
    reference: str
    position: int = -1
    """The task's index in its own list."""
    iteration: tuple[int, ...] = ()
    attempt: int = 1
    parent: str = ""
    """The key of the instance it runs inside (a loop, a branch, a try), "" at the top."""
    status: TaskStatus = TaskStatus.RUNNING
    job_id: str = ""
    input: Json = None
    output: Json = None
    error: Problem | None = None
    reason: str = ""
    """Why it was cancelled."""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    wake_at: datetime | None = None
    """When a waiting instance (a `wait`, a `try` between attempts) goes on."""
    reused: bool = False
    """A re-run took its outcome from the run it re-runs (its job was not submitted again)."""


@dataclass(frozen=True, slots=True)
class NewInstance:
    """A task instance that starts."""

    key: str
    order: int
    name: str
    kind: str
    call: str
    reference: str
    position: int
    iteration: tuple[int, ...]
    attempt: int
    parent: str
    started_at: datetime


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    company: str
    workflow_id: str
    namespace: str
    name: str
    version: str
    status: RunStatus
    trigger: RunTrigger
    input: Json
    created_at: datetime
    tasks: tuple[TaskRun, ...] = ()
    context: JsonObject = field(default_factory=dict)
    output: Json = None
    error: Problem | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    scheduled_at: datetime | None = None
    idempotency_key: str = ""
    after_run_id: str = ""
    """A run that waits for another to end before it starts (a buffered fire, a backfill)."""
    cancel_reason: str = ""
    """Who or what cancelled the run (a request, a schedule's policy, the jobs system)."""
    cursor: JsonObject | None = None
    """Where the interpretation stands (None before the run started, and for runs started
    before task instances, whose cursor is rebuilt from their tasks)."""
    rerun_of: str = ""
    """The run this one re-runs."""
    replay_until: int = 0
    """A re-run replays the instances of `rerun_of` that came before this place in its order
    (their outcomes reused, their jobs not submitted again), then goes on live."""


class RunEventType(StrEnum):
    RUN_CREATED = "run_created"
    RUN_STARTED = "run_started"
    TASK_STARTED = "task_started"
    TASK_JOB_SUBMITTED = "task_job_submitted"
    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    TASK_CANCELLED = "task_cancelled"
    TASK_SKIPPED = "task_skipped"
    TASK_WAITING = "task_waiting"
    TASK_RETRYING = "task_retrying"
    TASK_ERROR_CAUGHT = "task_error_caught"
    RUN_CANCELLING = "run_cancelling"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One durable state change. `seq` counts per run from 1; `global_seq` across all runs of the
    event's company, from 1 (never counting another company's events)."""

    run_id: str
    seq: int
    global_seq: int
    type: RunEventType
    time: datetime
    company: str
    workflow_id: str
    namespace: str
    run_status: RunStatus
    task_index: int = -1
    """The task's index in its own list; -1 for the run's own events."""
    task_name: str = ""
    task_status: TaskStatus | None = None
    job_id: str = ""
    error: Problem | None = None
    reason: str = ""
    """Why the run is being cancelled or was (on RUN_CANCELLING and RUN_CANCELLED), or why a
    task instance was."""
    task_key: str = ""
    """The task instance concerned (its `TaskRun.key`)."""
    task_reference: str = ""
    iteration: tuple[int, ...] = ()
    attempt: int = 0
    until: datetime | None = None
    """When a waiting task goes on (TASK_WAITING), or the next attempt starts (TASK_RETRYING)."""

    @property
    def terminal(self) -> bool:
        return self.type in (
            RunEventType.RUN_COMPLETED,
            RunEventType.RUN_FAILED,
            RunEventType.RUN_CANCELLED,
        )


RUN_EVENT_FOR: Mapping[RunStatus, RunEventType] = {
    RunStatus.RUNNING: RunEventType.RUN_STARTED,
    RunStatus.CANCELLING: RunEventType.RUN_CANCELLING,
    RunStatus.COMPLETED: RunEventType.RUN_COMPLETED,
    RunStatus.FAILED: RunEventType.RUN_FAILED,
    RunStatus.CANCELLED: RunEventType.RUN_CANCELLED,
}

TASK_EVENT_FOR: Mapping[TaskStatus, RunEventType] = {
    TaskStatus.RUNNING: RunEventType.TASK_STARTED,
    TaskStatus.COMPLETED: RunEventType.TASK_COMPLETED,
    TaskStatus.FAILED: RunEventType.TASK_FAILED,
    TaskStatus.CANCELLED: RunEventType.TASK_CANCELLED,
    TaskStatus.SKIPPED: RunEventType.TASK_SKIPPED,
}


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to create, PENDING, with a RUN_CREATED event (its task instances are created as
    they start)."""

    id: str
    company: str
    workflow_id: str
    namespace: str
    name: str
    version: str
    trigger: RunTrigger
    input: Json
    created_at: datetime
    idempotency_key: str = ""
    scheduled_at: datetime | None = None
    after_run_id: str = ""
    rerun_of: str = ""
    replay_until: int = 0


@dataclass(frozen=True, slots=True)
class RunFilter:
    workflow_id: str = ""
    statuses: tuple[RunStatus, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    namespace: str = ""
    id_prefix: str = ""
    """Runs whose id starts with it: a short id, resolved."""
    triggers: tuple[RunTrigger, ...] = ()


@dataclass(frozen=True, slots=True)
class WatchFilter:
    workflow_id: str = ""
    namespace: str = ""
    statuses: tuple[RunStatus, ...] = ()
    after_global_seq: int = 0

    def matches(self, event: RunEvent) -> bool:
        return (
            (not self.workflow_id or event.workflow_id == self.workflow_id)
            and (not self.namespace or event.namespace == self.namespace)
            and (not self.statuses or event.run_status in self.statuses)
        )
