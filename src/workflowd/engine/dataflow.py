"""The data of one run: its expressions' variables and values, each call's job request and
output, and the budget every stored value is charged to, so nothing stored is unreadable.

The interpreter says what to evaluate and with which of the frame's variables; this adds the
run's constants (`$workflow`, `$runtime`), evaluates off the event loop, and checks what comes
back before it may be stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime

from workflowd.domain.definition import CallBody, Task, WorkflowDefinition
from workflowd.domain.jobs import JobInfo, JobRequest
from workflowd.domain.json import Json, JsonObject
from workflowd.domain.run import ErrorType, Problem, Run
from workflowd.engine.budget import OverBudget, ValueBudget
from workflowd.engine.deps import EngineDeps
from workflowd.engine.flow import CallStep, Evaluate, Purpose
from workflowd.engine.problems import StepFailed
from workflowd.spec.expressions import ExpressionError
from workflowd.spec.operations import OPERATIONS

# The values of these purposes are stored (a task's input or output, the context, the run's
# output): they are charged to the run's budget, not only checked against the bounds.
_STORED = frozenset({Purpose.INPUT, Purpose.OUTPUT, Purpose.SET, Purpose.RUN_OUTPUT})
_MAX_KEY_CHARS = 200


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def idempotency_key(run_id: str, key: str) -> str:
    """The jobs API's idempotency key of a task instance's job: readable while short enough
    for any jobs system, hashed past that."""
    readable = f"{run_id}:{key}"
    if len(readable) <= _MAX_KEY_CHARS:
        return readable
    return f"{run_id}:{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


def stores_input(task: Task) -> bool:
    """A call's input is stored (it is what its job was made of), and so is what `input.from`
    computed; any other task's input is the previous one's output, stored already."""
    return isinstance(task.body, CallBody) or task.input_from is not None


def stores_output(task: Task) -> bool:
    """What a task computed is stored: a call's result, a `set`, an `output.as`. A control-flow
    task's output is its inner tasks' (stored with them), so it is not stored twice."""
    return task.kind.value in ("call", "set") or task.output_as is not None


class DataFlow:
    def __init__(
        self, deps: EngineDeps, run: Run, definition: WorkflowDefinition, started_at: datetime
    ) -> None:
        self._deps = deps
        self._run = run
        limits = deps.limits
        self._budget = ValueBudget(limits.values, limits.max_run_value_bytes, run)
        workflow: JsonObject = {
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
            workflow["scheduledAt"] = iso(run.scheduled_at)
        self._constants: JsonObject = {
            "workflow": workflow,
            "runtime": {"name": "workflowd", "version": deps.runtime_version},
        }

    async def evaluate(self, step: Evaluate) -> Json:
        """The expression's value, checked (and charged, when it will be stored)."""
        variables = {**step.variables, **self._constants}
        evaluator = self._deps.evaluator
        owner = _owner(step.where)
        try:
            if step.template:
                value = await evaluator.evaluate(step.expr, step.subject, variables)
            else:
                value = await evaluator.evaluate_field(step.expr, step.subject, variables)
        except ExpressionError as exc:
            title = f"cannot evaluate {step.where}"
            problem = Problem.of(ErrorType.EXPRESSION, title, str(exc), owner)
            raise StepFailed(problem) from exc
        if step.purpose in _STORED:
            self._store(self._budget.charge, value, f"{step.where}'s value", owner)
        elif step.purpose == Purpose.EXPORT:
            self._store(self._budget.replace_context, value, "the exported context", owner)
        else:
            self._store(self._budget.check, value, f"{step.where}'s value", owner)
        return value

    def charge_input(self, task: Task, value: Json) -> None:
        self._store(self._budget.charge, value, f"task {task.name}'s input", task.reference)

    async def request(self, step: CallStep) -> JobRequest:
        """The job a call's `with` resolves to, checked by its operation."""
        task = step.task
        body = task.body
        assert isinstance(body, CallBody)
        evaluate = Evaluate(
            step.key, Purpose.SET, dict(body.with_), step.input, step.variables,
            f"{task.reference}/with", template=True,
        )  # fmt: skip
        resolved = await self._evaluate_unstored(evaluate)
        operation = OPERATIONS[body.call]
        params = resolved if isinstance(resolved, dict) else {}
        problems = operation.check_resolved(params, f"{task.reference}/with")
        if problems:
            detail = "; ".join(f"{d.pointer}: {d.message}" for d in problems)
            title = f"task {task.name} has invalid parameters after evaluation"
            raise StepFailed(Problem.of(ErrorType.VALIDATION, title, detail, task.reference))
        return JobRequest(
            type=operation.job_type,
            input=operation.to_job_input(params),
            idempotency_key=idempotency_key(self._run.id, step.key),
            # The jobs client adds workflowd's own tag (its config owns the one constant).
            metadata={
                "workflow_id": self._run.workflow_id,
                "workflow_run_id": self._run.id,
                "task_name": task.name,
                "task_reference": task.reference,
            },
        )

    async def _evaluate_unstored(self, step: Evaluate) -> Json:
        variables = {**step.variables, **self._constants}
        try:
            value = await self._deps.evaluator.evaluate(step.expr, step.subject, variables)
        except ExpressionError as exc:
            title = f"cannot evaluate {step.where}"
            owner = _owner(step.where)
            raise StepFailed(Problem.of(ErrorType.EXPRESSION, title, str(exc), owner)) from exc
        self._store(self._budget.check, value, f"{step.where}'s value", _owner(step.where))
        return value

    async def stored_request(self, task: Task, key: str) -> JobRequest:
        """The intent committed by an earlier process: re-sent unchanged, never re-evaluated
        (expressions such as `$task.startedAt` would differ and the jobs API would answer 409)."""
        stored = await self._deps.store.job_request(self._run.id, key)
        if not isinstance(stored, dict):
            problem = Problem.of(
                ErrorType.RUNTIME, "the task's stored job request is missing", "", task.reference
            )
            raise StepFailed(problem)
        return JobRequest.from_json(stored)

    def output(self, task: Task, info: JobInfo) -> Json:
        """The operation's output of a completed job, charged to the run's budget."""
        body = task.body
        assert isinstance(body, CallBody)
        output: Json = OPERATIONS[body.call].output_from_result(info.result or {})
        what = f"task {task.name}'s job {info.job_id} result"
        self._store(self._budget.charge, output, what, task.reference)
        return output

    @staticmethod
    def _store(account: Callable[[Json], None], value: Json, what: str, instance: str) -> None:
        """`account(value)`, or the task fails saying why the value cannot be stored."""
        try:
            account(value)
        except OverBudget as exc:
            title = f"{what} cannot be stored"
            raise StepFailed(Problem.of(ErrorType.VALIDATION, title, str(exc), instance)) from exc


_SUFFIXES = (
    "/with", "/input/from", "/output/as", "/export/as", "/if", "/set", "/while", "/for/in",
    "/wait", "/raise/error", "/catch/when", "/catch/exceptWhen", "/catch/retry/when",
    "/catch/retry/exceptWhen",
)  # fmt: skip


def _owner(pointer: str) -> str:
    """The task (or workflow) an expression's pointer belongs to: its error's `instance`."""
    for suffix in _SUFFIXES:
        if pointer.endswith(suffix):
            return pointer[: -len(suffix)] or "/"
    if "/switch/" in pointer:
        return pointer.rsplit("/switch/", 1)[0]
    return pointer
