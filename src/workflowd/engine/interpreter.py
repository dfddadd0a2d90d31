"""The interpreter: a pure function from a run's cursor and a step's outcome to what comes next.

`advance(cursor, outcome, now)` never touches the store, the jobs system or a clock of its own:
it walks the definition tree from where the cursor stands and returns an `Advance` (the new
cursor, the steps to start and to cancel, the task instances' changes, the run's end). The
executor performs the steps, commits the records with the cursor, and feeds each step's outcome
back. Expressions are steps too, so every decision that depends on data (`if`, a `switch` case,
a `for`'s items, `while`, whether a `try` catches an error) is taken here from their values.

Its parts: the entry points (this module); the run, its lists and each instance's data flow
(`lifecycle.py`); the kinds of task (`kinds.py`; `for` and `fork` in `loops.py`; `try`,
`raise`, faults, cancels and timeouts in `faults.py`); the step each instance awaits
(`steps.py`); and the advance in progress (`work.py`).

The language's flow, where the DSL leaves a choice to the runtime (docs/workflow-language.md):
- `if` is false (jq's truthiness: false and null): the task is SKIPPED, its input is its output,
  and the flow continues with the next task;
- `then: exit` ends the current list: in a `for`, the iteration (the loop goes on);
- a `switch` takes the first case whose `when` holds, else its case without `when`, else its
  own `then`; its output is its input;
- `for` checks `while` before each iteration (with the iteration's variables bound), feeds each
  iteration the previous one's output, and outputs the last (its input when no iteration ran);
- `fork` branches run at once; without `compete` the first branch to fail cancels the others
  and fails the fork; with `compete` the first branch to complete wins and the others are
  cancelled, and a branch that fails is out of the race (the fork fails when all have);
- a `try` that catches an error retries its block while the policy allows; when it stops
  retrying, `catch.do` runs if there is one (its output is the task's), else a policy that
  retried lets the last error through, and a catch without either completes with its input.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from workflowd.domain.definition import FlowLimits, WorkflowDefinition
from workflowd.domain.json import Json
from workflowd.domain.retry import Uniform
from workflowd.engine.cursor import Cursor, RunPhase, TaskFrame, clone
from workflowd.engine.flow import (
    RUN_KEY,
    Advance,
    CallCompleted,
    Evaluated,
    Outcome,
    Purpose,
    Step,
    Stopped,
    TimedOut,
    Woke,
)
from workflowd.engine.lifecycle import Lifecycle
from workflowd.engine.steps import run_evaluation
from workflowd.engine.work import CALL, SLEEP, Work, deadlines, iso, parse_iso, walk

__all__ = ["CALL", "Interpreter", "iso", "parse_iso", "walk"]


class Interpreter:
    def __init__(
        self,
        definition: WorkflowDefinition,
        limits: FlowLimits | None = None,
        uniform: Uniform = random.uniform,
    ) -> None:
        self._definition = definition
        self._core = Lifecycle(definition, limits or FlowLimits(), uniform)

    def start(self, run_input: Json, now: datetime) -> Advance:
        """A new run's first decision."""
        cursor = Cursor(phase=RunPhase.INPUT, data=run_input, context={})
        if self._definition.timeout_s is not None:
            cursor.deadline = iso(now + timedelta(seconds=self._definition.timeout_s))
        work = Work(cursor, now)
        self._core.start(work)
        return work.advance

    def advance(self, cursor: Cursor, outcome: Outcome, now: datetime) -> Advance:
        """What follows `outcome`. An outcome for a step that is no longer awaited (cancelled
        meanwhile) changes nothing."""
        work = Work(clone(cursor), now)
        if cursor.phase == RunPhase.DONE:
            return work.advance
        if isinstance(outcome, Stopped):
            self._core.stop(work, outcome)
        elif isinstance(outcome, TimedOut):
            self._core.timed_out(work, outcome)
        elif outcome.key == RUN_KEY:
            self._core.run_outcome(work, outcome)
        else:
            frame = work.frames.get(outcome.key)
            if frame is not None and _awaits(frame, outcome):
                frame.pending = ""
                self._core.task_outcome(work, frame, outcome)
        return work.advance

    def enter(self, cursor: Cursor, now: datetime) -> Advance:
        """A cursor rebuilt for a run started before task instances: it stands in the run's
        list either on a task whose job was under way, or before the next task to start."""
        work = Work(clone(cursor), now)
        root = work.cursor.root
        if root is not None and root.task is None:
            self._core.enter(work, root)
        work.advance.steps.extend(self.in_flight(work.cursor))
        return work.advance

    def in_flight(self, cursor: Cursor) -> list[Step]:
        """The steps a cursor awaits: what a resumed run starts again (an expression is
        evaluated again; a call finds its committed intent; a sleep keeps its instant)."""
        work = Work(cursor)
        steps: list[Step] = []
        if cursor.pending:
            steps.append(run_evaluation(self._definition, cursor, Purpose(cursor.pending)))
        for frame in work.frames.values():
            if frame.pending:
                steps.append(self._core.step_of(work, frame))
        return steps

    def next_deadline(self, cursor: Cursor) -> TimedOut | None:
        """The deadline that comes first, as the outcome it will be, and when (`deadline`)."""
        found = deadlines(cursor)
        return min(found, key=lambda item: item[1])[0] if found else None

    def deadline_of(self, cursor: Cursor, timed_out: TimedOut) -> datetime | None:
        for candidate, at in deadlines(cursor):
            if candidate == timed_out:
                return at
        return None


def _awaits(frame: TaskFrame, outcome: Outcome) -> bool:
    """Whether `outcome` answers the step the frame waits for (a fault answers any)."""
    if isinstance(outcome, Evaluated):
        return frame.pending == outcome.purpose.value
    if isinstance(outcome, CallCompleted):
        return frame.pending == CALL
    if isinstance(outcome, Woke):
        return frame.pending == SLEEP
    return bool(frame.pending)
