"""What the interpreter and the executor say to each other, as plain values.

The interpreter (`interpreter.py`) decides; the executor does. Each decision (`Advance`) holds
the steps to start (`Step`: evaluate an expression, run a call's job, sleep until an instant),
the steps to cancel, the changes to record about task instances (`Record`, committed by the
executor with the cursor), and the run's end when it has come. The executor answers with the
outcome of each step (`Outcome`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from workflowd.domain.definition import Task
from workflowd.domain.json import Json, JsonObject
from workflowd.domain.run import Problem, RunStatus, TaskStatus
from workflowd.engine.cursor import Cursor, Path

# --- steps -----------------------------------------------------------------------------------


class Purpose(StrEnum):
    """What an expression is evaluated for."""

    IF = "if"
    INPUT = "input"
    OUTPUT = "output"
    EXPORT = "export"
    SET = "set"
    CASE = "case"
    IN = "in"
    WHILE = "while"
    CATCH_WHEN = "catch.when"
    CATCH_EXCEPT = "catch.exceptWhen"
    RETRY_WHEN = "retry.when"
    RETRY_EXCEPT = "retry.exceptWhen"
    RAISE = "raise"
    WAIT = "wait"
    RUN_INPUT = "run.input"
    RUN_OUTPUT = "run.output"


RUN_KEY = ""
"""The key of the run's own steps (its `input.from`, its `output.as`, its timeout)."""


@dataclass(frozen=True, slots=True)
class Evaluate:
    key: str
    purpose: Purpose
    expr: Json
    subject: Json
    variables: JsonObject
    """The variables of the frame's scope; the executor adds `$workflow` and `$runtime`."""
    where: str
    """The JSON pointer of the expression, for its error."""
    template: bool = False
    """Only `${ … }` leaves are expressions (`set`, a raised error's title); otherwise a bare
    string is jq too (`if`, `input.from`, `when` …)."""


@dataclass(frozen=True, slots=True)
class CallStep:
    """Run a call task's job: resolve its `with`, commit the intent, submit, await the end."""

    key: str
    task: Task
    input: Json
    variables: JsonObject
    path: Path


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait until `until` (a `wait` task, or a retry's backoff); the instant is durable."""

    key: str
    until: datetime


Step = Evaluate | CallStep | Sleep


# --- outcomes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evaluated:
    key: str
    purpose: Purpose
    value: Json


@dataclass(frozen=True, slots=True)
class CallCompleted:
    key: str
    output: Json


@dataclass(frozen=True, slots=True)
class Faulted:
    """A step failed with an error a `try` may catch (an expression, a job, a raise …)."""

    key: str
    problem: Problem


@dataclass(frozen=True, slots=True)
class Woke:
    key: str


@dataclass(frozen=True, slots=True)
class TimedOut:
    """A deadline passed: a task's `timeout.after` (`attempt` False), a retry attempt's
    `limit.attempt.duration` (`attempt` True), or the workflow's (`key` is `RUN_KEY`)."""

    key: str
    attempt: bool = False


@dataclass(frozen=True, slots=True)
class Stopped:
    """The run is to end now, whatever runs: CANCELLED (on request, or because the jobs system
    cancelled the job of the instance `key` on its own: that instance carries `problem`), or
    FAILED with `problem` (an internal error; every live instance fails with it)."""

    reason: str
    problem: Problem | None = None
    status: RunStatus = RunStatus.CANCELLED
    key: str = ""


Outcome = Evaluated | CallCompleted | Faulted | Woke | TimedOut | Stopped


# --- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    key: str
    task: Task
    path: Path
    order: int
    parent: str
    at: datetime


@dataclass(frozen=True, slots=True)
class InputResolved:
    key: str
    task: Task
    input: Json


@dataclass(frozen=True, slots=True)
class Ended:
    key: str
    task: Task
    status: TaskStatus
    at: datetime
    output: Json = None
    problem: Problem | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Waiting:
    """A `wait` task sleeps until `until`."""

    key: str
    task: Task
    until: datetime


@dataclass(frozen=True, slots=True)
class Retrying:
    """A `try` caught `problem` and runs its block again, as `attempt`, at `until`."""

    key: str
    task: Task
    attempt: int
    until: datetime
    problem: Problem


@dataclass(frozen=True, slots=True)
class Caught:
    key: str
    task: Task
    problem: Problem


@dataclass(frozen=True, slots=True)
class ContextChanged:
    context: JsonObject


Record = Started | InputResolved | Ended | Waiting | Retrying | Caught | ContextChanged


@dataclass(frozen=True, slots=True)
class RunEnd:
    status: RunStatus
    output: Json = None
    problem: Problem | None = None
    reason: str = ""


@dataclass(slots=True)
class Advance:
    cursor: Cursor
    steps: list[Step] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    """Keys of the frames whose steps in flight must stop (their instances are recorded
    CANCELLED in `records`)."""
    records: list[Record] = field(default_factory=list)
    end: RunEnd | None = None
