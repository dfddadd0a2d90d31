"""A validated workflow definition: what `spec/` produces and `engine/` executes.

A definition is a tree: the workflow's `do` list holds tasks, and the control-flow tasks (`do`,
`for`, `fork`, `try`) hold lists of their own. Every task carries its reference, the JSON pointer
of its definition in the document (`/do/1/each/do/0/build`), which names it in errors, events
and task instances. Expressions are kept as written (strings that are wholly `${ … }`, or bare
jq in the fields that are expressions by definition); the engine evaluates them at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeAlias

from workflowd.domain.json import Json, JsonBounds
from workflowd.domain.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class FlowLimits:
    """Bounds on what one run may do; each is a setting with a safe default. Those a
    definition shows are checked when a workflow is created, the others while it runs."""

    max_iterations: int = 1000
    """Items one `for` may iterate over."""
    max_fork_width: int = 64
    max_depth: int = 16
    """Task lists nested in one another."""
    max_instances: int = 5000
    """Task instances one run may start (loops, retries and jumps included)."""
    max_attempts: int = 100
    """Executions of one `try` block."""
    max_wait_s: float = 7 * 86400.0
    values: JsonBounds = field(default_factory=JsonBounds)
    """Each value a run holds (a fork's output, made of its branches', included)."""


class TaskKind(StrEnum):
    CALL = "call"
    SET = "set"
    SWITCH = "switch"
    DO = "do"
    FOR = "for"
    FORK = "fork"
    TRY = "try"
    RAISE = "raise"
    WAIT = "wait"


class Flow(StrEnum):
    """The flow directives a `then` may name besides a task of the same list."""

    CONTINUE = "continue"
    EXIT = "exit"
    END = "end"


@dataclass(frozen=True, slots=True)
class TaskList:
    """An ordered list of named tasks (`do`, a `for`'s body, `try`, `catch.do`, fork branches);
    `reference` is the list's own pointer (`/do`, `/do/0/guard/try`)."""

    reference: str
    tasks: tuple[Task, ...]

    def position(self, name: str) -> int:
        """The index of the task named `name` (a `then` target; validated at creation)."""
        for index, task in enumerate(self.tasks):
            if task.name == name:
                return index
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class CallBody:
    call: str
    with_: Mapping[str, Json]


@dataclass(frozen=True, slots=True)
class SetBody:
    value: Json
    """An object whose `${ … }` leaves are evaluated, or one `${ … }` string."""


@dataclass(frozen=True, slots=True)
class SwitchCase:
    name: str
    when: Json
    """None for the default case."""
    then: str


@dataclass(frozen=True, slots=True)
class SwitchBody:
    cases: tuple[SwitchCase, ...]


@dataclass(frozen=True, slots=True)
class DoBody:
    tasks: TaskList


@dataclass(frozen=True, slots=True)
class ForBody:
    each: str
    in_: Json
    at: str
    while_: Json
    tasks: TaskList


@dataclass(frozen=True, slots=True)
class ForkBody:
    branches: TaskList
    compete: bool


@dataclass(frozen=True, slots=True)
class ErrorFilter:
    """`catch.errors.with`: the fields a caught error must equal (None: any)."""

    type: str | None = None
    status: int | None = None
    instance: str | None = None
    title: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class CatchBody:
    errors: ErrorFilter = field(default_factory=ErrorFilter)
    as_: str = "error"
    when: Json = None
    except_when: Json = None
    retry: RetryPolicy | None = None
    tasks: TaskList | None = None


@dataclass(frozen=True, slots=True)
class TryBody:
    tasks: TaskList
    catch: CatchBody


@dataclass(frozen=True, slots=True)
class ErrorDefinition:
    """An error a `raise` task faults with; `title` and `detail` may be expressions."""

    type: str
    status: int
    title: Json = None
    detail: Json = None


@dataclass(frozen=True, slots=True)
class RaiseBody:
    error: ErrorDefinition


@dataclass(frozen=True, slots=True)
class WaitBody:
    seconds: float | None
    """The duration when it is written as one; None when it is an expression."""
    expression: Json = None


TaskBody: TypeAlias = (
    CallBody | SetBody | SwitchBody | DoBody | ForBody | ForkBody | TryBody | RaiseBody | WaitBody
)


@dataclass(frozen=True, slots=True)
class Task:
    """One task of a list. `position` is its index in that list."""

    name: str
    reference: str
    position: int
    kind: TaskKind
    body: TaskBody
    if_: Json = None
    then: str = Flow.CONTINUE
    input_from: Json = None
    output_as: Json = None
    export_as: Json = None
    timeout_s: float | None = None
    metadata: Mapping[str, Json] = field(default_factory=dict)

    @property
    def call(self) -> str:
        """The operation of a `call` task, else the task's kind (a metrics label)."""
        return self.body.call if isinstance(self.body, CallBody) else self.kind.value

    def lists(self) -> tuple[TaskList, ...]:
        """The task lists this task holds, in document order."""
        body = self.body
        if isinstance(body, DoBody | ForBody):
            return (body.tasks,)
        if isinstance(body, ForkBody):
            return (body.branches,)
        if isinstance(body, TryBody):
            return (body.tasks,) if body.catch.tasks is None else (body.tasks, body.catch.tasks)
        return ()


@dataclass(frozen=True, slots=True)
class Schedule:
    """The spec's `schedule` block: `cron` split into the cron text and its IANA zone (UTC
    unless `CRON_TZ=`), or `every` as seconds (`cron` is then empty)."""

    cron: str = ""
    timezone: str = "UTC"
    every_s: float | None = None

    def describe(self) -> str:
        if self.every_s is not None:
            return f"every {self.every_s:g} s"
        zone = "" if self.timezone == "UTC" else f"CRON_TZ={self.timezone} "
        return f"cron {zone}{self.cron}"


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
    dsl: str
    namespace: str
    name: str
    version: str
    do: TaskList
    title: str | None = None
    summary: str | None = None
    input_schema: Json = None
    input_from: Json = None
    output_as: Json = None
    timeout_s: float | None = None
    schedule: Schedule | None = None
    _tasks: dict[str, Task] = field(default_factory=dict, compare=False, repr=False)
    _lists: dict[str, TaskList] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        stack = [self.do]
        while stack:
            tasks = stack.pop()
            self._lists[tasks.reference] = tasks
            for task in tasks.tasks:
                self._tasks[task.reference] = task
                stack.extend(task.lists())

    def task(self, reference: str) -> Task:
        """The task at `reference` (KeyError when the definition has none there)."""
        return self._tasks[reference]

    def task_list(self, reference: str) -> TaskList:
        return self._lists[reference]
