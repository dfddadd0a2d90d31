"""What data each task of one run receives and gives: the expression arguments, a task's input
and job request, its output and the context it exports, and the run's own input and output.

Every value that will be stored passes the run's `ValueBudget`, so nothing stored is unreadable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from workflowd.domain.definition import TaskDefinition, WorkflowDefinition
from workflowd.domain.jobs import JobInfo, JobRequest
from workflowd.domain.json import Json, JsonObject
from workflowd.domain.run import ErrorType, Problem, Run, TaskStatus
from workflowd.engine.budget import OverBudget, ValueBudget
from workflowd.engine.deps import EngineDeps
from workflowd.engine.problems import StepFailed
from workflowd.spec.expressions import ExpressionError
from workflowd.spec.operations import OPERATIONS


@dataclass(frozen=True, slots=True)
class Position:
    """Where a run stands: the next task to run, its raw input, and the context."""

    index: int
    raw_input: Json
    context: JsonObject


@dataclass(frozen=True, slots=True)
class Resolved:
    """A task's input (after `input.from`) and the exact job request its `with` resolved to."""

    task_input: Json
    request: JobRequest


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _owner(pointer: str) -> str:
    """The task (or workflow) an expression's pointer belongs to: its error's `instance`."""
    for suffix in ("/with", "/input/from", "/output/as", "/export/as"):
        if pointer.endswith(suffix):
            return pointer[: -len(suffix)] or "/"
    return pointer


class DataFlow:
    def __init__(
        self, deps: EngineDeps, run: Run, definition: WorkflowDefinition, started_at: datetime
    ) -> None:
        self._deps = deps
        self._run = run
        self._definition = definition
        limits = deps.limits
        self._budget = ValueBudget(limits.values, limits.max_run_value_bytes, run)
        self._task_started: dict[int, datetime] = {
            t.index: t.started_at for t in run.tasks if t.started_at is not None
        }
        self._workflow: JsonObject = {
            "id": run.workflow_id,
            "runId": run.id,
            "definition": {
                "namespace": definition.namespace,
                "name": definition.name,
                "version": definition.version,
            },
            "input": run.input,
            "startedAt": iso(started_at),
        }
        if run.scheduled_at is not None:
            self._workflow["scheduledAt"] = iso(run.scheduled_at)

    # --- where a run starts or resumes --------------------------------------------------------

    async def resume_point(self) -> Position:
        """After the last completed task; before the first task, the run's input after the
        workflow's `input.from`."""
        context = dict(self._run.context)
        done = [t for t in self._run.tasks if t.status == TaskStatus.COMPLETED]
        if done:
            return Position(done[-1].index + 1, done[-1].output, context)
        raw: Json = self._run.input
        if self._definition.input_from is not None:
            variables = self._variables(context, None)
            raw = await self._evaluate(self._definition.input_from, raw, variables, "/input/from")
        return Position(0, raw, context)

    # --- a task -------------------------------------------------------------------------------

    async def resolve(self, task: TaskDefinition, position: Position, now: datetime) -> Resolved:
        """The task's input and job request: `input.from`, then `with`, then the operation's
        own checks of the evaluated parameters."""
        self._task_started[task.index] = now
        task_input = position.raw_input
        if task.input_from is not None:
            variables = self._variables(position.context, task)
            where = f"{task.reference}/input/from"
            task_input = await self._evaluate(task.input_from, task_input, variables, where)
        self._store(self._budget.charge, task_input, f"task {task.name}'s input", task.reference)
        variables = self._variables(position.context, task, input=task_input)
        resolved = await self._evaluate(
            dict(task.with_), task_input, variables, f"{task.reference}/with", template=True
        )
        operation = OPERATIONS[task.call]
        params = resolved if isinstance(resolved, dict) else {}
        problems = operation.check_resolved(params, f"{task.reference}/with")
        if problems:
            detail = "; ".join(f"{d.pointer}: {d.message}" for d in problems)
            title = f"task {task.name} has invalid parameters after evaluation"
            raise StepFailed(Problem.of(ErrorType.VALIDATION, title, detail, task.reference))
        request = JobRequest(
            type=operation.job_type,
            input=operation.to_job_input(params),
            idempotency_key=f"{self._run.id}:{task.index}",
            # The jobs client adds workflowd's own tag (its config owns the one constant).
            metadata={
                "workflow_id": self._run.workflow_id,
                "workflow_run_id": self._run.id,
                "task_name": task.name,
            },
        )
        return Resolved(task_input, request)

    async def stored_request(self, task: TaskDefinition) -> JobRequest:
        """The intent committed by an earlier process: re-sent unchanged, never re-evaluated
        (expressions such as `$task.startedAt` would differ and the jobs API would answer 409)."""
        stored = await self._deps.store.job_request(self._run.id, task.index)
        if not isinstance(stored, dict):
            problem = Problem.of(
                ErrorType.RUNTIME, "the task's stored job request is missing", "", task.reference
            )
            raise StepFailed(problem)
        return JobRequest.from_json(stored)

    async def output(
        self, task: TaskDefinition, info: JobInfo, task_input: Json, context: JsonObject
    ) -> Position:
        """Where the run stands after the task: its output (after `output.as`) is the next
        task's raw input, and `export.as` gives the new context."""
        output: Json = OPERATIONS[task.call].output_from_result(info.result or {})
        what = f"task {task.name}'s job {info.job_id} result"
        self._store(self._budget.check, output, what, task.reference)
        if task.output_as is not None:
            variables = self._variables(context, task, input=task_input)
            where = f"{task.reference}/output/as"
            output = await self._evaluate(task.output_as, output, variables, where)
        self._store(self._budget.charge, output, f"task {task.name}'s output", task.reference)
        if task.export_as is None:
            return Position(task.index + 1, output, context)
        variables = self._variables(context, task, input=task_input, output=output)
        where = f"{task.reference}/export/as"
        exported = await self._evaluate(task.export_as, output, variables, where)
        if not isinstance(exported, dict):
            raise StepFailed(
                Problem.of(
                    ErrorType.VALIDATION,
                    f"task {task.name}'s export.as must yield an object",
                    f"it yielded {type(exported).__name__}",
                    task.reference,
                )
            )
        what = f"task {task.name}'s exported context"
        self._store(self._budget.replace_context, exported, what, task.reference)
        return Position(task.index + 1, output, exported)

    # --- the run's output ---------------------------------------------------------------------

    async def run_output(self, position: Position) -> Json:
        if self._definition.output_as is None:
            return position.raw_input
        variables = self._variables(position.context, None)
        output = await self._evaluate(
            self._definition.output_as, position.raw_input, variables, "/output/as"
        )
        self._store(self._budget.charge, output, "the run's output", "/output/as")
        return output

    # --- helpers ------------------------------------------------------------------------------

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
                "startedAt": iso(started) if started else None,
            }
        return variables

    async def _evaluate(
        self,
        expr: Json,
        subject: Json,
        variables: Mapping[str, Json],
        where: str,
        template: bool = False,
    ) -> Json:
        """`template`: `expr` is a value whose `${ … }` leaves are evaluated (`with`); otherwise
        it is a data-flow field, where a bare string is jq too."""
        evaluator = self._deps.evaluator
        try:
            if template:
                value = await evaluator.evaluate(expr, subject, variables)
            else:
                value = await evaluator.evaluate_field(expr, subject, variables)
        except ExpressionError as exc:
            title = f"cannot evaluate {where}"
            raise StepFailed(
                Problem.of(ErrorType.EXPRESSION, title, str(exc), _owner(where))
            ) from exc
        self._store(self._budget.check, value, f"{where}'s value", _owner(where))
        return value

    @staticmethod
    def _store(account: Callable[[Json], None], value: Json, what: str, instance: str) -> None:
        """`account(value)`, or the task fails saying why the value cannot be stored."""
        try:
            account(value)
        except OverBudget as exc:
            title = f"{what} cannot be stored"
            raise StepFailed(Problem.of(ErrorType.VALIDATION, title, str(exc), instance)) from exc
