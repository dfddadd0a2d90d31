"""What a task instance (or the run) awaits, as the step the executor runs: a call with its
variables, a sleep until its committed instant, an expression with its subject, its variables
and its JSON pointer. A pure function of the frame: a resumed run asks again."""

from __future__ import annotations

from workflowd.domain.definition import Task, WorkflowDefinition
from workflowd.domain.json import Json, JsonObject
from workflowd.engine.cursor import Cursor, TaskFrame
from workflowd.engine.flow import RUN_KEY, CallStep, Evaluate, Purpose, Sleep, Step
from workflowd.engine.kinds import Kind
from workflowd.engine.work import CALL, SLEEP, Work, parse_iso


def awaited(work: Work, frame: TaskFrame, task: Task, kind: Kind) -> Step:
    """The step `frame` waits for; `kind` is its task's."""
    if frame.pending == CALL:
        variables = _variables(work, frame, task, input=frame.input)
        return CallStep(frame.key, task, frame.input, variables, frame.path)
    if frame.pending == SLEEP:
        return Sleep(frame.key, parse_iso(frame.wake_at))
    return _evaluation(work, frame, task, Purpose(frame.pending), kind)


def run_evaluation(definition: WorkflowDefinition, cursor: Cursor, purpose: Purpose) -> Evaluate:
    """The run's own `input.from` or `output.as`."""
    if purpose == Purpose.RUN_INPUT:
        expr, where = definition.input_from, "/input/from"
    else:
        expr, where = definition.output_as, "/output/as"
    return Evaluate(RUN_KEY, purpose, expr, cursor.data, {"context": cursor.context}, where)


def _evaluation(work: Work, frame: TaskFrame, task: Task, purpose: Purpose, kind: Kind) -> Evaluate:
    """The data flow's expressions are the same for every kind; the body's are its kind's."""
    ref, key = task.reference, frame.key
    with_input = _variables(work, frame, task, input=frame.input)
    if purpose == Purpose.IF:
        variables = _variables(work, frame, task)
        return Evaluate(key, purpose, task.if_, frame.raw, variables, f"{ref}/if")
    if purpose == Purpose.INPUT:
        variables = _variables(work, frame, task)
        return Evaluate(key, purpose, task.input_from, frame.raw, variables, f"{ref}/input/from")
    if purpose == Purpose.OUTPUT:
        where = f"{ref}/output/as"
        return Evaluate(key, purpose, task.output_as, frame.output, with_input, where)
    if purpose == Purpose.EXPORT:
        variables = {**with_input, "output": frame.output}
        where = f"{ref}/export/as"
        return Evaluate(key, purpose, task.export_as, frame.output, variables, where)
    return kind.evaluation(frame, task, purpose, with_input)


def _variables(work: Work, frame: TaskFrame, task: Task, **extra: Json) -> JsonObject:
    about: JsonObject = {
        "name": task.name,
        "reference": task.reference,
        "startedAt": frame.started_at,
    }
    return {**frame.scope, "context": work.cursor.context, "task": about, **extra}
