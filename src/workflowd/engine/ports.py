"""The narrow interfaces the engine depends on; the composition root injects implementations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from workflowd.domain.jobs import JobInfo, JobRequest
from workflowd.domain.json import Json, JsonObject
from workflowd.domain.page import Page
from workflowd.domain.run import (
    NewInstance,
    NewRun,
    Problem,
    Run,
    RunEvent,
    RunFilter,
    RunStatus,
    TaskStatus,
    WatchFilter,
)
from workflowd.domain.schedule import (
    Activation,
    FireDecision,
    FireRequest,
    FireResult,
    NextFire,
    WorkflowSchedule,
)
from workflowd.domain.workflow import NewWorkflowVersion, Workflow, WorkflowFilter, WorkflowHead
from workflowd.spec import SchemaResult


class WorkflowStore(Protocol):
    async def save_version(
        self, new: NewWorkflowVersion, next_fire: NextFire
    ) -> tuple[Workflow, bool]: ...

    async def get_workflow(
        self,
        company: str,
        *,
        workflow_id: str = "",
        namespace: str = "",
        name: str = "",
        version: str = "",
    ) -> Workflow: ...

    async def workflow_head(
        self,
        company: str,
        *,
        workflow_id: str = "",
        namespace: str = "",
        name: str = "",
        version: str = "",
    ) -> WorkflowHead | None:
        """The workflow at `version` (empty: its current one), without its specification, in
        one statement; None when there is no such workflow or version."""
        ...

    async def specification(self, workflow_id: str, version: str) -> str | None: ...

    async def list_workflows(
        self, company: str, filt: WorkflowFilter, size: int, token: str
    ) -> Page[Workflow]: ...

    async def archive_workflow(self, company: str, workflow_id: str, now: datetime) -> Workflow: ...

    async def unarchive_workflow(
        self, company: str, workflow_id: str, now: datetime
    ) -> Workflow: ...

    async def delete_workflow_runs(self, company: str, workflow_id: str, limit: int) -> int:
        """Delete up to `limit` runs of an archived workflow none of whose runs is active;
        returns how many went (0: none is left)."""
        ...

    async def delete_workflow(self, company: str, workflow_id: str) -> int:
        """Delete an archived workflow whose runs are gone; returns its number of versions."""
        ...


class RunTransaction(Protocol):
    """Changes to one run inside one store transaction. Each is one state change: it checks the
    state machine and appends its event, published only once the transaction committed."""

    run_status: RunStatus

    def start_run(self, at: datetime) -> None: ...

    def request_cancel(self, reason: str) -> None: ...

    def end_run(
        self,
        status: RunStatus,
        at: datetime,
        *,
        output: Json = None,
        problem: Problem | None = None,
        reason: str = "",
    ) -> None: ...

    def set_context(self, context: JsonObject) -> None: ...

    def set_cursor(self, cursor: JsonObject | None) -> None: ...

    def start_instance(self, new: NewInstance) -> None: ...

    def set_input(self, key: str, task_input: Json) -> None: ...

    def record_intent(self, key: str, request: JsonObject) -> None: ...

    def record_job(self, key: str, job_id: str) -> None: ...

    def end_instance(
        self,
        key: str,
        status: TaskStatus,
        at: datetime,
        *,
        output: Json = None,
        store_output: bool = False,
        problem: Problem | None = None,
        reason: str = "",
        job_id: str = "",
        reused: bool = False,
    ) -> None: ...

    def instance_waits(self, key: str, until: datetime) -> None: ...

    def instance_retries(
        self, key: str, attempt: int, until: datetime, problem: Problem
    ) -> None: ...

    def error_caught(self, key: str, problem: Problem) -> None: ...

    def fail_running_instances(
        self, at: datetime, problem: Problem, job_ids: Mapping[str, str]
    ) -> None: ...

    def cancel_job_later(self, job_id: str, key: str) -> None: ...


class RunStore(Protocol):
    async def create_run(self, new: NewRun) -> tuple[Run, list[RunEvent], bool]: ...

    async def get_run(self, company: str, run_id: str) -> Run: ...

    async def delete_run(self, company: str, run_id: str) -> None:
        """Delete an ended run no other run needs (FailedPrecondition otherwise)."""
        ...

    async def list_runs(
        self, company: str, filt: RunFilter, size: int, token: str, *, tasks: bool = True
    ) -> Page[Run]: ...

    def update_run(
        self,
        run_id: str,
        now: datetime,
        change: Callable[[RunTransaction], None],
        *,
        owned: bool = True,
        urgent: bool = False,
    ) -> asyncio.Future[list[RunEvent]]: ...

    async def job_request(self, run_id: str, key: str) -> Json: ...

    async def jobs_to_cancel(self) -> list[tuple[str, str]]: ...

    async def job_cancel_confirmed(self, job_id: str) -> None: ...

    async def claim_runs(self, now: datetime, *, takeover: bool, limit: int) -> list[str]:
        """Up to `limit` active runs this replica now owns, oldest first: with `takeover` every
        active run (the only daemon on its store), else those whose owner's lease ran out."""
        ...

    async def join(self, replica: str, now: datetime, lease: timedelta) -> None: ...

    async def renew(self, now: datetime, lease: timedelta) -> bool: ...

    async def leave(self, now: datetime) -> None: ...

    async def events_since(self, after: int, limit: int) -> list[tuple[int, RunEvent]]:
        """Every company's events after the log position `after`, each with its position (the
        log's own order, which only the replicas' follower sees)."""
        ...

    async def runs_by_id(self, run_ids: list[str]) -> list[Run]: ...

    async def events_after(
        self, company: str, run_id: str, after_seq: int, limit: int
    ) -> list[RunEvent]: ...

    async def events_after_global(
        self, company: str, filt: WatchFilter, after: int, limit: int
    ) -> list[RunEvent]: ...

    async def log_position(self) -> int: ...

    async def pruned_through(self, company: str) -> int:
        """The `global_seq` of the company's newest deleted event (0: none was)."""
        ...

    async def last_company_seq(self, company: str) -> int:
        """The `global_seq` of the company's last event: each company's events are numbered
        on their own, so no cursor a company sees counts another's."""
        ...


class JobsPort(Protocol):
    """The jobs system; every call acts for one company (the run's)."""

    async def submit(self, request: JobRequest, company: str) -> JobInfo: ...

    async def wait(self, job_id: str, company: str) -> JobInfo: ...

    async def cancel(
        self, job_id: str, company: str, retry_deadline_s: float | None = None
    ) -> JobInfo: ...

    async def find(
        self,
        workflow_run_id: str,
        idempotency_key: str,
        company: str,
        retry_deadline_s: float | None = None,
    ) -> JobInfo | None: ...


class ExpressionEvaluator(Protocol):
    """Expressions and input schemas, both evaluated off the event loop under a time bound."""

    async def evaluate(self, expr: Json, subject: Json, variables: Mapping[str, Json]) -> Json: ...

    async def evaluate_field(
        self, expr: Json, subject: Json, variables: Mapping[str, Json]
    ) -> Json: ...

    async def check_schema(self, schema: Json, instance: Json) -> SchemaResult: ...


class ScheduleStore(Protocol):
    async def activate_schedule(
        self, activation: Activation, next_fire: NextFire
    ) -> WorkflowSchedule: ...

    async def deactivate_schedule(
        self, company: str, workflow_id: str, now: datetime, reason: str
    ) -> WorkflowSchedule: ...

    async def get_schedule(self, company: str, workflow_id: str) -> WorkflowSchedule: ...

    async def schedule_of(self, workflow_id: str) -> WorkflowSchedule | None: ...

    async def list_schedules(
        self, company: str, namespace: str, size: int, token: str
    ) -> Page[WorkflowSchedule]: ...

    async def due_schedules(self) -> list[tuple[str, datetime]]: ...

    async def fire(
        self, request: FireRequest, next_at: datetime | None
    ) -> tuple[FireResult, Run | None]: ...

    async def record_decision(
        self, workflow_id: str, decision: FireDecision, next_at: datetime | None
    ) -> None: ...

    async def latest_runs_at(
        self, company: str, workflow_id: str, instants: list[datetime]
    ) -> dict[datetime, Run]: ...

    async def create_backfill(
        self, runs: list[NewRun], sequential: bool, now: datetime
    ) -> list[tuple[Run, list[RunEvent], bool]]: ...
