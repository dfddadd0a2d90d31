"""The pieces of one task's execution that do not touch run state: expression resolution, the
job request, talking to the jobs system, outputs and the problems each failure becomes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from workflowd.domain.definition import TaskDefinition, WorkflowDefinition
from workflowd.domain.jobs import (
    IdempotencyConflict,
    JobInfo,
    JobNotFound,
    JobRejected,
    JobRequest,
    JobsCommunicationError,
    JobsError,
    JobState,
)
from workflowd.domain.json import Json, JsonObject
from workflowd.domain.run import ErrorType, Problem, Run, TaskStatus
from workflowd.engine.budget import OverBudget, ValueBudget
from workflowd.engine.deps import EngineDeps
from workflowd.spec.expressions import ExpressionError
from workflowd.spec.operations import OPERATIONS

log = logging.getLogger("workflowd.engine")

JOB_TAG = "workflow_enqueued"


class StepFailed(Exception):
    """A task cannot go on; `problem` is what the run records."""

    def __init__(self, problem: Problem, task_status: TaskStatus = TaskStatus.FAILED) -> None:
        super().__init__(problem.title)
        self.problem = problem
        self.task_status = task_status


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _owner(pointer: str) -> str:
    """The task (or workflow) an expression's pointer belongs to: its error's `instance`."""
    for suffix in ("/with", "/input/from", "/output/as", "/export/as"):
        if pointer.endswith(suffix):
            return pointer[: -len(suffix)] or "/"
    return pointer


class TaskStep:
    def __init__(
        self, deps: EngineDeps, run: Run, definition: WorkflowDefinition, started_at: datetime
    ) -> None:
        self._deps = deps
        self._run = run
        self._definition = definition
        self._started_at = started_at
        self._task_started: dict[int, datetime] = {
            t.index: t.started_at for t in run.tasks if t.started_at is not None
        }
        limits = deps.limits
        self._budget = ValueBudget(limits.values, limits.max_run_value_bytes, run)
        self._workflow: JsonObject = {
            "id": run.workflow_id,
            "runId": run.id,
            "definition": {
                "namespace": definition.namespace,
                "name": definition.name,
                "version": definition.version,
            },
            "input": run.input,
            "startedAt": _iso(started_at),
        }
        if run.scheduled_at is not None:
            self._workflow["scheduledAt"] = _iso(run.scheduled_at)

    def _variables(
        self, context: JsonObject, task: TaskDefinition | None, **extra: Json
    ) -> dict[str, Json]:
        variables: dict[str, Json] = {
            "context": context,
            "workflow": self._workflow,
            "runtime": {"name": "workflowd", "version": self._deps.runtime_version},
            **extra,
        }
        if task is not None:
            started = self._task_started.get(task.index)
            variables["task"] = {
                "name": task.name,
                "reference": task.reference,
                "startedAt": _iso(started) if started else None,
            }
        return variables

    async def _evaluate(
        self, expr: Json, subject: Json, variables: Mapping[str, Json], where: str, field: bool
    ) -> Json:
        evaluator = self._deps.evaluator
        try:
            if field:
                value = await evaluator.evaluate_field(expr, subject, variables)
            else:
                value = await evaluator.evaluate(expr, subject, variables)
        except ExpressionError as exc:
            raise StepFailed(
                Problem.of(
                    ErrorType.EXPRESSION, f"cannot evaluate {where}", str(exc), _owner(where)
                )
            ) from exc
        self._store(self._budget.check, value, f"{where} gave a value that cannot be stored", where)
        return value

    @staticmethod
    def _store(account: Callable[[Json], None], value: Json, title: str, where: str) -> None:
        """`account(value)`, or the task fails with why the value cannot be stored."""
        try:
            account(value)
        except OverBudget as exc:
            raise StepFailed(
                Problem.of(ErrorType.VALIDATION, title, str(exc), _owner(where))
            ) from exc

    async def resume_point(self) -> tuple[Json, JsonObject, int]:
        """The raw input of the first unfinished task, the context, and that task's index."""
        context = dict(self._run.context)
        done = [t for t in self._run.tasks if t.status == TaskStatus.COMPLETED]
        if done:
            return done[-1].output, context, done[-1].index + 1
        raw: Json = self._run.input
        if self._definition.input_from is not None:
            raw = await self._evaluate(
                self._definition.input_from,
                raw,
                self._variables(context, None),
                "/input/from",
                field=True,
            )
        return raw, context, 0

    async def resolve(
        self, task: TaskDefinition, raw_input: Json, context: JsonObject, now: datetime
    ) -> tuple[Json, JobRequest]:
        self._task_started[task.index] = now
        task_input = raw_input
        if task.input_from is not None:
            task_input = await self._evaluate(
                task.input_from,
                raw_input,
                self._variables(context, task),
                f"{task.reference}/input/from",
                field=True,
            )
        self._store(
            self._budget.charge,
            task_input,
            f"task {task.name}'s input cannot be stored",
            task.reference,
        )
        variables = self._variables(context, task, input=task_input)
        resolved = await self._evaluate(
            dict(task.with_), task_input, variables, f"{task.reference}/with", field=False
        )
        operation = OPERATIONS[task.call]
        if not isinstance(resolved, dict):
            resolved = {}
        problems = operation.check_resolved(resolved, f"{task.reference}/with")
        if problems:
            detail = "; ".join(f"{d.pointer}: {d.message}" for d in problems)
            raise StepFailed(
                Problem.of(
                    ErrorType.VALIDATION,
                    f"task {task.name} has invalid parameters after evaluation",
                    detail,
                    task.reference,
                )
            )
        request = JobRequest(
            type=operation.job_type,
            input=operation.to_job_input(resolved),
            idempotency_key=f"{self._run.id}:{task.index}",
            tags=(JOB_TAG,),
            metadata={
                "workflow_id": self._run.workflow_id,
                "workflow_run_id": self._run.id,
                "task_name": task.name,
            },
        )
        return task_input, request

    async def stored_request(self, task: TaskDefinition) -> JobRequest:
        stored = await self._deps.store.job_request(self._run.id, task.index)
        if not isinstance(stored, dict):
            raise StepFailed(
                Problem.of(
                    ErrorType.RUNTIME,
                    "the task's stored job request is missing",
                    instance=task.reference,
                )
            )
        return JobRequest.from_json(stored)

    async def submit(self, task: TaskDefinition, request: JobRequest) -> JobInfo:
        try:
            return await self._deps.jobs.submit(request)
        except JobRejected as exc:
            title = f"the jobs API refused task {task.name}'s job"
            raise self._jobs_failure(task, exc, "rejected", title) from exc
        except IdempotencyConflict as exc:
            title = f"task {task.name}'s job conflicts with another under its idempotency key"
            raise self._jobs_failure(task, exc, "conflict", title) from exc
        except JobsCommunicationError as exc:
            title = f"cannot reach the jobs system for task {task.name}"
            raise self._jobs_failure(task, exc, "communication", title) from exc

    async def wait(self, task: TaskDefinition, job_id: str) -> JobInfo:
        try:
            return await self._deps.jobs.wait(job_id)
        except JobRejected as exc:
            title = f"the jobs API refused to report on task {task.name}'s job {job_id}"
            raise self._jobs_failure(task, exc, "rejected", title) from exc
        except JobNotFound as exc:
            title = f"task {task.name}'s job {job_id} vanished from the jobs system"
            raise self._jobs_failure(task, exc, "vanished", title) from exc
        except JobsCommunicationError as exc:
            title = f"cannot reach the jobs system for task {task.name}"
            raise self._jobs_failure(task, exc, "communication", title) from exc

    def _jobs_failure(
        self, task: TaskDefinition, exc: JobsError, kind: str, title: str
    ) -> StepFailed:
        """What a jobs-system error becomes: the task's problem, counted by kind."""
        self._deps.metrics.jobs_api_errors.labels(kind).inc()
        if isinstance(exc, JobsCommunicationError):
            error_type = ErrorType.COMMUNICATION
        elif isinstance(exc, JobRejected) and exc.status == 401:
            error_type = ErrorType.AUTHENTICATION
        else:
            error_type = ErrorType.RUNTIME
        return StepFailed(Problem.of(error_type, title, exc.message, task.reference))

    async def cancel_job(self, task: TaskDefinition, job_id: str) -> JobInfo | None:
        try:
            return await self._deps.jobs.cancel(job_id)
        except (JobNotFound, JobsCommunicationError, JobRejected) as exc:
            log.warning(
                "could not cancel job %s: %s",
                job_id,
                exc,
                extra={"run_id": self._run.id, "task": task.name, "job_id": job_id},
            )
            return None

    def remaining_timeout(self, task: TaskDefinition, now: datetime) -> float | None:
        limits = []
        started = self._task_started.get(task.index, now)
        if task.timeout_s is not None:
            limits.append(task.timeout_s - (now - started).total_seconds())
        if self._definition.timeout_s is not None:
            limits.append(self._definition.timeout_s - (now - self._started_at).total_seconds())
        return max(0.0, min(limits)) if limits else None

    def timeout_problem(self, task: TaskDefinition) -> Problem:
        if task.timeout_s is not None:
            title = f"task {task.name} timed out after {task.timeout_s:g} s"
        else:
            title = f"the workflow timed out after {self._definition.timeout_s:g} s"
        return Problem.of(ErrorType.TIMEOUT, title, "its job was cancelled", task.reference)

    def job_problem(self, task: TaskDefinition, info: JobInfo) -> Problem:
        detail = "; ".join(info.failure_messages) or f"job {info.job_id} ended {info.state}"
        if info.state == JobState.CANCELLED:
            return Problem.of(
                ErrorType.RUNTIME,
                f"task {task.name}'s job {info.job_id} was cancelled",
                detail,
                task.reference,
            )
        return Problem.of(
            ErrorType.RUNTIME,
            f"task {task.name} failed: job {info.job_id} failed",
            detail,
            task.reference,
        )

    async def finish(
        self, task: TaskDefinition, info: JobInfo, task_input: Json, context: JsonObject
    ) -> tuple[Json, JsonObject]:
        """The task's output (after `output.as`) and the new context (after `export.as`)."""
        output: Json = OPERATIONS[task.call].output_from_result(info.result or {})
        self._store(
            self._budget.check,
            output,
            f"task {task.name}'s job {info.job_id} returned a result that cannot be stored",
            task.reference,
        )
        if task.output_as is not None:
            output = await self._evaluate(
                task.output_as,
                output,
                self._variables(context, task, input=task_input),
                f"{task.reference}/output/as",
                field=True,
            )
        self._store(
            self._budget.charge,
            output,
            f"task {task.name}'s output cannot be stored",
            task.reference,
        )
        if task.export_as is None:
            return output, context
        exported = await self._evaluate(
            task.export_as,
            output,
            self._variables(context, task, input=task_input, output=output),
            f"{task.reference}/export/as",
            field=True,
        )
        if not isinstance(exported, dict):
            raise StepFailed(
                Problem.of(
                    ErrorType.VALIDATION,
                    f"task {task.name}'s export.as must yield an object",
                    f"it yielded {type(exported).__name__}",
                    task.reference,
                )
            )
        self._store(
            self._budget.replace_context,
            exported,
            f"task {task.name}'s export makes a context that cannot be stored",
            task.reference,
        )
        return output, exported

    async def workflow_output(self, last_output: Json, context: JsonObject) -> Json:
        if self._definition.output_as is None:
            return last_output
        output = await self._evaluate(
            self._definition.output_as,
            last_output,
            self._variables(context, None),
            "/output/as",
            field=True,
        )
        self._store(self._budget.charge, output, "the run's output cannot be stored", "/output/as")
        return output
