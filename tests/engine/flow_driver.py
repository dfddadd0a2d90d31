"""A driver for the pure interpreter, without a daemon: it answers each step at once (jq in this
process for expressions, a callback for calls, the step's own instant for sleeps), serializes
the cursor between steps as the executor commits it, and keeps every record."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import jq

from workflowd.domain.definition import FlowLimits, WorkflowDefinition
from workflowd.domain.json import Json
from workflowd.domain.run import ErrorType, Problem
from workflowd.engine.cursor import Cursor, from_json, to_json
from workflowd.engine.flow import (
    Advance,
    CallCompleted,
    CallStep,
    Evaluate,
    Evaluated,
    Faulted,
    Outcome,
    Record,
    RunEnd,
    Sleep,
    Step,
    Woke,
)
from workflowd.engine.interpreter import Interpreter
from workflowd.spec import parse
from workflowd.spec._jqworker import VARIABLES, sandboxed
from workflowd.spec.expressions import expression_source, find_expressions

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HEAD = "document: {dsl: '1.0.3', namespace: t, name: t, version: '1.0.0'}\n"

CallAnswer = Callable[[CallStep], Outcome]
Answer = Callable[[Step], Outcome | None]


def evaluate(step: Evaluate) -> Json:
    """The step's value, as the evaluator's workers compute it."""
    variables: dict[str, Json] = dict.fromkeys(VARIABLES)
    variables.update(step.variables)
    variables["workflow"] = {"input": None}
    names = sorted(variables)

    def run(source: str) -> Json:
        program = jq.compile(sandboxed(source, names=names))
        data = [step.subject, *(variables[name] for name in names)]
        value: Json = program.input_value(data).first()
        return value

    if isinstance(step.expr, str) and not step.template:
        return run(expression_source(step.expr))
    results = {path: run(source) for path, source in find_expressions(step.expr)}
    return _substitute(step.expr, results)


def _substitute(
    value: Json, results: dict[tuple[str | int, ...], Json], path: tuple[str | int, ...] = ()
) -> Json:
    if path in results:
        return results[path]
    if isinstance(value, dict):
        return {k: _substitute(v, results, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, results, (*path, i)) for i, v in enumerate(value)]
    return value


def echo(step: CallStep) -> Outcome:
    """A call whose job outputs its input."""
    return CallCompleted(step.key, step.input)


def fail(title: str = "the job failed") -> CallAnswer:
    def answer(step: CallStep) -> Outcome:
        return Faulted(step.key, Problem.of(ErrorType.RUNTIME, title, "", step.task.reference))

    return answer


@dataclass
class Trace:
    end: RunEnd | None
    records: list[Record] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    cursors: list[Cursor] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)
    """("step" | "ended", key), in the order the interpreter decided them."""

    def started(self) -> list[str]:
        return [r.key for r in self.records if type(r).__name__ == "Started"]

    def ended(self) -> dict[str, str]:
        return {r.key: r.status.value for r in self.records if type(r).__name__ == "Ended"}  # type: ignore[union-attr]

    def calls(self) -> list[str]:
        return [s.key for s in self.steps if isinstance(s, CallStep)]


def definition(body: str) -> WorkflowDefinition:
    return parse(HEAD + body)


def run(
    body: str | WorkflowDefinition,
    run_input: Json = None,
    *,
    calls: CallAnswer = echo,
    answer: Answer | None = None,
    limits: FlowLimits | None = None,
    resume_every: int = 0,
    max_outcomes: int = 10_000,
    order: Callable[[list[Step]], int] = lambda steps: 0,
) -> Trace:
    """Drive a run to its end. `answer` may answer any step first (None: the default answer);
    `resume_every` > 0 rebuilds the steps in flight from the serialized cursor every that many
    outcomes, as a restart does; `order` picks which of the steps in flight answers next."""
    found = definition(body) if isinstance(body, str) else body
    interpreter = Interpreter(found, limits, uniform=lambda low, high: low)
    now = T0
    advance = interpreter.start({} if run_input is None else run_input, now)
    trace = Trace(None)
    queue: list[Step] = []
    cursor = _take(advance, trace, queue)
    for count in range(max_outcomes):
        if advance.end is not None:
            break
        if resume_every and count and count % resume_every == 0:
            cursor = from_json(json.loads(json.dumps(to_json(cursor))))
            queue = list(interpreter.in_flight(cursor))
        assert queue, "the run waits for nothing: it would never end"
        step = queue.pop(order(queue))
        now += timedelta(milliseconds=1)
        outcome = answer(step) if answer is not None else None
        if outcome is None:
            outcome = _default(step, calls)
        if isinstance(step, Sleep):
            now = max(now, step.until)
        advance = interpreter.advance(cursor, outcome, now)
        queue = [s for s in queue if s.key not in advance.cancels]
        cursor = _take(advance, trace, queue)
    trace.end = advance.end
    return trace


def _take(advance: Advance, trace: Trace, queue: list[Step]) -> Cursor:
    trace.records += advance.records
    trace.steps += advance.steps
    trace.log += [("ended", r.key) for r in advance.records if type(r).__name__ == "Ended"]
    trace.log += [("step", s.key) for s in advance.steps]
    queue += advance.steps
    cursor = from_json(json.loads(json.dumps(to_json(advance.cursor))))
    trace.cursors.append(cursor)
    return cursor


def _default(step: Step, calls: CallAnswer) -> Outcome:
    if isinstance(step, Evaluate):
        try:
            return Evaluated(step.key, step.purpose, evaluate(step))
        except ValueError as exc:
            return Faulted(step.key, Problem.of(ErrorType.EXPRESSION, str(exc), "", step.where))
    if isinstance(step, CallStep):
        return calls(step)
    return Woke(step.key)
