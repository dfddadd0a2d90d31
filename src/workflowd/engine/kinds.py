"""How each kind of task runs its body, and what a kind may ask of the interpreter's core.

The core (`lifecycle.py`) runs a task instance's data flow around its body (`if`, `input.from`,
`output.as`, `export.as`) and hands the body to its kind: `start` on the task's input, then each
outcome the body awaited. A kind reaches the core only through `Core`. The simple kinds are
here; `for` and `fork` are in `loops.py`, `try` and `raise` in `faults.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import timedelta
from typing import Protocol

from workflowd.domain.definition import (
    DoBody,
    FlowLimits,
    SetBody,
    SwitchBody,
    Task,
    TaskList,
    WaitBody,
    WorkflowDefinition,
)
from workflowd.domain.json import Json, JsonObject
from workflowd.domain.run import ErrorType, Problem
from workflowd.engine.cursor import ListFrame, Path, TaskFrame
from workflowd.engine.flow import Evaluate, Purpose, Waiting
from workflowd.engine.work import CALL, SLEEP, Work, iso, truthy
from workflowd.spec.fields import duration_seconds


class Core(Protocol):
    """What a kind asks of the core."""

    @property
    def definition(self) -> WorkflowDefinition: ...

    @property
    def limits(self) -> FlowLimits: ...

    def await_step(self, work: Work, frame: TaskFrame, pending: str) -> None:
        """`frame` waits for a step: a call, a sleep, or an expression (its purpose)."""

    def open(
        self,
        work: Work,
        frame: TaskFrame,
        tasks: TaskList,
        data: Json,
        path: Path,
        scope: JsonObject,
    ) -> None:
        """Run the list `tasks` inside `frame`, from its first task, on `data`."""

    def body_done(self, work: Work, frame: TaskFrame, task: Task, output: Json) -> None:
        """The body ended with `output`: `output.as` and `export.as` come next."""

    def new_frame(
        self,
        work: Work,
        owner: ListFrame | TaskFrame,
        task: Task,
        raw: Json,
        path: Path,
        scope: JsonObject,
    ) -> TaskFrame | None:
        """A new instance of `task` (None when the run may start no more: it faulted)."""

    def begin(self, work: Work, frame: TaskFrame, task: Task) -> None:
        """The instance starts its data flow (`if`, then `input.from`)."""

    def end_workflow(self, work: Work, holder: TaskFrame | None, output: Json) -> None:
        """`then: end` inside `holder`."""

    def fault(self, work: Work, frame: TaskFrame, task: Task, problem: Problem) -> None:
        """The instance fails with `problem`, which goes up the tree."""

    def cancel_branches(self, work: Work, fork: TaskFrame, reason: str) -> None:
        """Every live branch of `fork` ends CANCELLED with `reason`."""

    def fail_run(self, work: Work, problem: Problem) -> None:
        """The run ends FAILED."""


class Kind(ABC):
    """How one kind of task runs its body. The kinds that evaluate no expression, or never
    wait, are never asked for those."""

    def __init__(self, core: Core) -> None:
        self.core = core

    @abstractmethod
    def start(self, work: Work, frame: TaskFrame, task: Task) -> None:
        """The body begins, on `frame.input`."""

    def evaluation(
        self, frame: TaskFrame, task: Task, purpose: Purpose, variables: JsonObject
    ) -> Evaluate:
        """The body's expression for `purpose`; `variables` are the task's, with its input."""
        raise AssertionError(f"a {task.kind} task evaluates no {purpose}")

    def evaluated(
        self, work: Work, frame: TaskFrame, task: Task, purpose: Purpose, value: Json
    ) -> None:
        """The body's expression for `purpose` yielded `value`."""
        raise AssertionError(f"a {task.kind} task evaluates no {purpose}")

    def woke(self, work: Work, frame: TaskFrame, task: Task) -> None:
        """The sleep the body asked for is over."""
        raise AssertionError(f"a {task.kind} task never sleeps")

    def done(self, work: Work, frame: TaskFrame, task: Task, data: Json) -> None:
        """The list the body runs ended with `data`."""
        self.core.body_done(work, frame, task, data)


class Call(Kind):
    def start(self, work: Work, frame: TaskFrame, task: Task) -> None:
        self.core.await_step(work, frame, CALL)


class Set(Kind):
    def start(self, work: Work, frame: TaskFrame, task: Task) -> None:
        self.core.await_step(work, frame, Purpose.SET)

    def evaluation(
        self, frame: TaskFrame, task: Task, purpose: Purpose, variables: JsonObject
    ) -> Evaluate:
        assert isinstance(task.body, SetBody)
        where = f"{task.reference}/set"
        return Evaluate(frame.key, purpose, task.body.value, frame.input, variables, where, True)

    def evaluated(
        self, work: Work, frame: TaskFrame, task: Task, purpose: Purpose, value: Json
    ) -> None:
        self.core.body_done(work, frame, task, value)


class Do(Kind):
    def start(self, work: Work, frame: TaskFrame, task: Task) -> None:
        assert isinstance(task.body, DoBody)
        self.core.open(work, frame, task.body.tasks, frame.input, frame.path, frame.scope)


class Switch(Kind):
    def start(self, work: Work, frame: TaskFrame, task: Task) -> None:
        frame.case = 0
        self._next_case(work, frame, task)

    def evaluation(
        self, frame: TaskFrame, task: Task, purpose: Purpose, variables: JsonObject
    ) -> Evaluate:
        assert isinstance(task.body, SwitchBody)
        case = task.body.cases[frame.case]
        where = f"{task.reference}/switch/{frame.case}/{case.name}/when"
        return Evaluate(frame.key, purpose, case.when, frame.input, variables, where)

    def evaluated(
        self, work: Work, frame: TaskFrame, task: Task, purpose: Purpose, value: Json
    ) -> None:
        assert isinstance(task.body, SwitchBody)
        if truthy(value):
            frame.flow = task.body.cases[frame.case].then
            self.core.body_done(work, frame, task, frame.input)
        else:
            frame.case += 1
            self._next_case(work, frame, task)

    def _next_case(self, work: Work, frame: TaskFrame, task: Task) -> None:
        body = task.body
        assert isinstance(body, SwitchBody)
        while frame.case < len(body.cases) and body.cases[frame.case].when is None:
            frame.case += 1
        if frame.case < len(body.cases):
            self.core.await_step(work, frame, Purpose.CASE)
            return
        default = next((c for c in body.cases if c.when is None), None)
        frame.flow = default.then if default is not None else ""
        self.core.body_done(work, frame, task, frame.input)


class Wait(Kind):
    def start(self, work: Work, frame: TaskFrame, task: Task) -> None:
        assert isinstance(task.body, WaitBody)
        if task.body.seconds is None:
            self.core.await_step(work, frame, Purpose.WAIT)
        else:
            self._sleep(work, frame, task, task.body.seconds)

    def evaluation(
        self, frame: TaskFrame, task: Task, purpose: Purpose, variables: JsonObject
    ) -> Evaluate:
        assert isinstance(task.body, WaitBody)
        expression, where = task.body.expression, f"{task.reference}/wait"
        return Evaluate(frame.key, purpose, expression, frame.input, variables, where, True)

    def evaluated(
        self, work: Work, frame: TaskFrame, task: Task, purpose: Purpose, value: Json
    ) -> None:
        seconds = duration_seconds(value)
        if seconds is None:
            title = f"task {task.name}'s wait did not yield a duration"
            detail = "an ISO-8601 duration such as PT30S, or {seconds: 30}"
            problem = Problem.of(ErrorType.EXPRESSION, title, detail, task.reference)
            self.core.fault(work, frame, task, problem)
        else:
            self._sleep(work, frame, task, seconds)

    def woke(self, work: Work, frame: TaskFrame, task: Task) -> None:
        self.core.body_done(work, frame, task, frame.input)

    def _sleep(self, work: Work, frame: TaskFrame, task: Task, seconds: float) -> None:
        limit = self.core.limits.max_wait_s
        if seconds > limit:
            title = f"task {task.name} would wait {seconds:g} s; the limit is {limit:g} s"
            problem = Problem.of(ErrorType.VALIDATION, title, "setting max_wait_s", task.reference)
            self.core.fault(work, frame, task, problem)
            return
        until = work.now + timedelta(seconds=seconds)
        frame.wake_at = iso(until)
        work.advance.records.append(Waiting(frame.key, task, until))
        self.core.await_step(work, frame, SLEEP)
