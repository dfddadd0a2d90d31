"""The interpreter: a pure function from a run's cursor and a step's outcome to what comes next.

`advance(cursor, outcome, now)` never touches the store, the jobs system or a clock of its own:
it walks the definition tree from where the cursor stands and returns an `Advance` (the new
cursor, the steps to start and to cancel, the task instances' changes, the run's end). The
executor performs the steps, commits the records with the cursor, and feeds each step's outcome
back. Expressions are steps too, so every decision that depends on data (`if`, a `switch` case,
a `for`'s items, `while`, whether a `try` catches an error) is taken here from their values.

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
from collections.abc import Iterator
from datetime import datetime, timedelta

from workflowd.domain.definition import (
    CallBody,
    DoBody,
    Flow,
    FlowLimits,
    ForBody,
    ForkBody,
    RaiseBody,
    SetBody,
    SwitchBody,
    Task,
    TaskKind,
    TaskList,
    TryBody,
    WaitBody,
    WorkflowDefinition,
)
from workflowd.domain.json import Json, JsonObject
from workflowd.domain.retry import Uniform
from workflowd.domain.run import ErrorType, Problem, RunStatus, TaskStatus
from workflowd.engine import catching
from workflowd.engine.cursor import (
    Cursor,
    ListFrame,
    Phase,
    RunPhase,
    TaskFrame,
    clone,
    instance_key,
)
from workflowd.engine.flow import (
    RUN_KEY,
    Advance,
    CallCompleted,
    CallStep,
    Caught,
    ContextChanged,
    Ended,
    Evaluate,
    Evaluated,
    Faulted,
    InputResolved,
    Outcome,
    Purpose,
    Retrying,
    RunEnd,
    Sleep,
    Started,
    Step,
    Stopped,
    TimedOut,
    Waiting,
    Woke,
)
from workflowd.spec.fields import duration_seconds, type_name

CALL = "call"
SLEEP = "sleep"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def truthy(value: Json) -> bool:
    """jq's truthiness: only false and null are false."""
    return value is not None and value is not False


class _Work:
    """One advance in progress: the cursor being changed, and what it decided so far."""

    def __init__(self, cursor: Cursor, now: datetime = datetime.min) -> None:
        self.cursor = cursor
        self.now = now
        self.at = iso(now)
        self.advance = Advance(cursor)
        self.frames: dict[str, TaskFrame] = {}
        self.owners: dict[int, ListFrame | TaskFrame | None] = {}
        if cursor.root is not None:
            self._index(cursor.root, None)

    def _index(self, lst: ListFrame, owner: TaskFrame | None) -> None:
        self.owners[id(lst)] = owner
        if lst.task is not None:
            self.adopt(lst.task, lst)

    def adopt(self, frame: TaskFrame, owner: ListFrame | TaskFrame) -> None:
        self.frames[frame.key] = frame
        self.owners[id(frame)] = owner
        if frame.body is not None:
            self._index(frame.body, frame)
        for branch in frame.branches or ():
            if branch is not None:
                self.adopt(branch, frame)

    def owner(self, frame: TaskFrame | ListFrame) -> ListFrame | TaskFrame | None:
        return self.owners.get(id(frame))

    def stop(self, key: str) -> None:
        """The step of `key` is no longer awaited: not started if this advance asked for it,
        else cancelled."""
        steps = self.advance.steps
        kept = [step for step in steps if step.key != key]
        if len(kept) == len(steps):
            self.advance.cancels.append(key)
        else:
            steps[:] = kept


class Interpreter:
    def __init__(
        self,
        definition: WorkflowDefinition,
        limits: FlowLimits | None = None,
        uniform: Uniform = random.uniform,
    ) -> None:
        self._definition = definition
        self._limits = limits or FlowLimits()
        self._uniform = uniform

    # --- the three entry points ---------------------------------------------------------------

    def start(self, run_input: Json, now: datetime) -> Advance:
        """A new run's first decision."""
        cursor = Cursor(phase=RunPhase.INPUT, data=run_input, context={})
        if self._definition.timeout_s is not None:
            cursor.deadline = iso(now + timedelta(seconds=self._definition.timeout_s))
        work = _Work(cursor, now)
        self._run_input(work)
        return work.advance

    def advance(self, cursor: Cursor, outcome: Outcome, now: datetime) -> Advance:
        """What follows `outcome`. An outcome for a step that is no longer awaited (cancelled
        meanwhile) changes nothing."""
        work = _Work(clone(cursor), now)
        if cursor.phase == RunPhase.DONE:
            return work.advance
        if isinstance(outcome, Stopped):
            self._stop(work, outcome)
        elif isinstance(outcome, TimedOut):
            self._timed_out(work, outcome)
        elif outcome.key == RUN_KEY:
            self._run_outcome(work, outcome)
        else:
            frame = work.frames.get(outcome.key)
            if frame is not None and _awaits(frame, outcome):
                frame.pending = ""
                self._task_outcome(work, frame, outcome)
        return work.advance

    def enter(self, cursor: Cursor, now: datetime) -> Advance:
        """A cursor rebuilt for a run started before task instances: it stands in the run's
        list either on a task whose job was under way, or before the next task to start."""
        work = _Work(clone(cursor), now)
        root = work.cursor.root
        if root is not None and root.task is None:
            self._enter(work, root)
        work.advance.steps.extend(self.in_flight(work.cursor))
        return work.advance

    def in_flight(self, cursor: Cursor) -> list[Step]:
        """The steps a cursor awaits: what a resumed run starts again (an expression is
        evaluated again; a call finds its committed intent; a sleep keeps its instant)."""
        work = _Work(cursor)
        steps: list[Step] = []
        if cursor.pending:
            steps.append(self._run_evaluation(work, Purpose(cursor.pending)))
        for frame in work.frames.values():
            if frame.pending:
                steps.append(self._step_of(work, frame))
        return steps

    def next_deadline(self, cursor: Cursor) -> TimedOut | None:
        """The deadline that comes first, as the outcome it will be, and when (`deadline`)."""
        found = self._deadlines(cursor)
        return min(found, key=lambda item: item[1])[0] if found else None

    def deadline_of(self, cursor: Cursor, timed_out: TimedOut) -> datetime | None:
        for candidate, at in self._deadlines(cursor):
            if candidate == timed_out:
                return at
        return None

    def _deadlines(self, cursor: Cursor) -> list[tuple[TimedOut, datetime]]:
        if cursor.phase == RunPhase.DONE:
            return []
        found: list[tuple[TimedOut, datetime]] = []
        if cursor.deadline:
            found.append((TimedOut(RUN_KEY), parse_iso(cursor.deadline)))
        for frame in _Work(cursor).frames.values():
            if frame.deadline:
                found.append((TimedOut(frame.key), parse_iso(frame.deadline)))
            if frame.attempt_deadline:
                found.append((TimedOut(frame.key, True), parse_iso(frame.attempt_deadline)))
        return found

    # --- the run ------------------------------------------------------------------------------

    def _run_input(self, work: _Work) -> None:
        if self._definition.input_from is None:
            self._run_body(work, work.cursor.data)
            return
        work.cursor.pending = Purpose.RUN_INPUT
        work.advance.steps.append(self._run_evaluation(work, Purpose.RUN_INPUT))

    def _run_evaluation(self, work: _Work, purpose: Purpose) -> Evaluate:
        cursor = work.cursor
        if purpose == Purpose.RUN_INPUT:
            expr, where = self._definition.input_from, "/input/from"
        else:
            expr, where = self._definition.output_as, "/output/as"
        return Evaluate(RUN_KEY, purpose, expr, cursor.data, {"context": cursor.context}, where)

    def _run_outcome(self, work: _Work, outcome: Outcome) -> None:
        cursor = work.cursor
        purpose, cursor.pending = cursor.pending, ""
        if isinstance(outcome, Faulted):
            self._fail_run(work, outcome.problem)
        elif isinstance(outcome, Evaluated) and outcome.purpose == purpose:
            if purpose == Purpose.RUN_INPUT:
                self._run_body(work, outcome.value)
            else:
                self._complete_run(work, outcome.value)
        else:
            cursor.pending = purpose

    def _run_body(self, work: _Work, data: Json) -> None:
        cursor = work.cursor
        cursor.phase = RunPhase.BODY
        cursor.root = ListFrame(self._definition.do.reference, 0, data, ())
        work.owners[id(cursor.root)] = None
        self._enter(work, cursor.root)

    def _run_output(self, work: _Work, data: Json) -> None:
        cursor = work.cursor
        cursor.phase, cursor.data, cursor.root = RunPhase.OUTPUT, data, None
        if self._definition.output_as is None:
            self._complete_run(work, data)
            return
        cursor.pending = Purpose.RUN_OUTPUT
        work.advance.steps.append(self._run_evaluation(work, Purpose.RUN_OUTPUT))

    def _complete_run(self, work: _Work, output: Json) -> None:
        work.cursor.phase, work.cursor.output = RunPhase.DONE, output
        work.advance.end = RunEnd(RunStatus.COMPLETED, output=output)

    def _fail_run(self, work: _Work, problem: Problem) -> None:
        self._stop(work, Stopped(problem.title, problem, RunStatus.FAILED))

    def _stop(self, work: _Work, stop: Stopped) -> None:
        """End the run now: every live instance ends (CANCELLED with the reason, or FAILED with
        the problem), its step with it."""
        cursor = work.cursor
        if cursor.root is not None and cursor.root.task is not None:
            self._halt(work, cursor.root.task, stop)
        cursor.phase, cursor.root, cursor.pending = RunPhase.DONE, None, ""
        work.advance.end = RunEnd(
            stop.status,
            problem=stop.problem if stop.status == RunStatus.FAILED else None,
            reason=stop.reason if stop.status == RunStatus.CANCELLED else "",
        )

    def _halt(self, work: _Work, frame: TaskFrame, stop: Stopped) -> None:
        """`frame` and everything inside it end, innermost first."""
        children = [*(b for b in frame.branches or () if b is not None)]
        if frame.body is not None and frame.body.task is not None:
            children.append(frame.body.task)
        for child in children:
            self._halt(work, child, stop)
        frame.body, frame.branches = None, None
        if frame.pending:
            work.stop(frame.key)
            frame.pending = ""
        task = self._definition.task(frame.reference)
        if stop.status == RunStatus.FAILED:
            ended = Ended(frame.key, task, TaskStatus.FAILED, work.now, problem=stop.problem)
        else:
            problem = stop.problem if frame.key == stop.key else None
            ended = Ended(
                frame.key, task, TaskStatus.CANCELLED, work.now, problem=problem,
                reason=stop.reason,
            )  # fmt: skip
        work.advance.records.append(ended)

    def _timed_out(self, work: _Work, outcome: TimedOut) -> None:
        if outcome.key == RUN_KEY:
            seconds = self._definition.timeout_s or 0
            title = f"the workflow timed out after {seconds:g} s"
            self._fail_run(work, Problem.of(ErrorType.TIMEOUT, title, "", "/"))
            return
        frame = work.frames.get(outcome.key)
        if frame is None:
            return
        task = self._definition.task(frame.reference)
        if outcome.attempt and frame.attempt_deadline:
            assert isinstance(task.body, TryBody)
            assert task.body.catch.retry is not None
            seconds = task.body.catch.retry.attempt_timeout_s or 0
            title = f"attempt {frame.attempt} of task {task.name} timed out after {seconds:g} s"
            problem = Problem.of(ErrorType.TIMEOUT, title, "", task.reference)
            self._cancel_children(work, frame, f"cancelled: {title}")
            self._catch(work, frame, task, problem)
        elif not outcome.attempt and frame.deadline:
            title = f"task {task.name} timed out after {task.timeout_s or 0:g} s"
            self._fault(work, frame, task, Problem.of(ErrorType.TIMEOUT, title, "", task.reference))

    # --- lists --------------------------------------------------------------------------------

    def _list(self, lst: ListFrame) -> TaskList:
        return self._definition.task_list(lst.reference)

    def _enter(self, work: _Work, lst: ListFrame) -> None:
        tasks = self._list(lst).tasks
        if lst.index >= len(tasks):
            self._list_done(work, lst)
            return
        task = tasks[lst.index]
        if lst.index in lst.seen:
            # A task that runs again in this list (a `then` jumped back) is a new instance.
            lst.generation, lst.seen = lst.generation + 1, []
        lst.seen.append(lst.index)
        frame = self._new_frame(work, lst, task, lst.data, lst.instance_path(), lst.scope)
        if frame is not None:
            lst.task = frame
            work.adopt(frame, lst)
            self._begin(work, frame, task)

    def _new_frame(
        self,
        work: _Work,
        owner: ListFrame | TaskFrame,
        task: Task,
        raw: Json,
        path: tuple[str, ...],
        scope: JsonObject,
    ) -> TaskFrame | None:
        cursor = work.cursor
        if cursor.order >= self._limits.max_instances:
            limit = self._limits.max_instances
            title = f"the run has started {limit} task instances, its limit (max_instances)"
            self._fault_owner(work, owner, Problem.of(ErrorType.RUNTIME, title, "", task.reference))
            return None
        cursor.order += 1
        frame = TaskFrame(
            key=instance_key(task.reference, path),
            reference=task.reference,
            path=path,
            order=cursor.order,
            phase=Phase.IF,
            raw=raw,
            started_at=work.at,
            scope=scope,
        )
        if task.timeout_s is not None:
            frame.deadline = iso(work.now + timedelta(seconds=task.timeout_s))
        parent = work.owner(owner) if isinstance(owner, ListFrame) else owner
        parent_key = parent.key if isinstance(parent, TaskFrame) else ""
        work.advance.records.append(
            Started(frame.key, task, path, frame.order, parent_key, work.now)
        )
        return frame

    def _list_done(self, work: _Work, lst: ListFrame) -> None:
        owner = work.owner(lst)
        if owner is None:
            self._run_output(work, lst.data)
            return
        assert isinstance(owner, TaskFrame)
        owner.body = None
        task = self._definition.task(owner.reference)
        if task.kind == TaskKind.FOR:
            owner.item += 1
            owner.output = lst.data
            self._iterate(work, owner, task)
        else:
            self._body_done(work, owner, task, lst.data)

    def _follow(self, work: _Work, lst: ListFrame, output: Json, flow: str) -> None:
        """The task at `lst.index` ended with `output`: where the flow goes from there."""
        lst.task, lst.data = None, output
        if flow == Flow.END:
            holder = work.owner(lst)
            assert holder is None or isinstance(holder, TaskFrame)
            self._end_workflow(work, holder, output)
        elif flow == Flow.EXIT:
            self._list_done(work, lst)
        elif flow == Flow.CONTINUE:
            lst.index += 1
            self._enter(work, lst)
        else:
            lst.index = self._list(lst).position(flow)
            self._enter(work, lst)

    def _end_workflow(self, work: _Work, holder: TaskFrame | None, output: Json) -> None:
        """`then: end` inside `holder` (None: in the run's own list): the tasks around the one
        that said it complete with its output, every other live instance is cancelled, and the
        run's `output.as` comes next."""
        reason = "cancelled: the workflow ended (then: end)"
        while holder is not None:
            holder.body = None
            for branch in holder.branches or ():
                if branch is not None:
                    self._cancel_frame(work, branch, reason)
            holder.branches = None
            task = self._definition.task(holder.reference)
            work.advance.records.append(
                Ended(holder.key, task, TaskStatus.COMPLETED, work.now, output=output)
            )
            up = work.owner(holder)
            holder = work.owner(up) if isinstance(up, ListFrame) else up  # type: ignore[assignment]
        self._run_output(work, output)

    # --- one task -----------------------------------------------------------------------------

    def _begin(self, work: _Work, frame: TaskFrame, task: Task) -> None:
        if task.if_ is not None:
            self._evaluate(work, frame, Purpose.IF)
        else:
            self._resolve_input(work, frame, task)

    def _resolve_input(self, work: _Work, frame: TaskFrame, task: Task) -> None:
        frame.phase = Phase.INPUT
        if task.input_from is not None:
            self._evaluate(work, frame, Purpose.INPUT)
        else:
            self._start_body(work, frame, task, frame.raw)

    def _start_body(self, work: _Work, frame: TaskFrame, task: Task, task_input: Json) -> None:
        frame.phase, frame.input = Phase.BODY, task_input
        work.advance.records.append(InputResolved(frame.key, task, task_input))
        body = task.body
        if isinstance(body, CallBody):
            self._await(work, frame, CALL)
        elif isinstance(body, SetBody):
            self._evaluate(work, frame, Purpose.SET)
        elif isinstance(body, SwitchBody):
            frame.case = 0
            self._next_case(work, frame, task, body)
        elif isinstance(body, DoBody):
            self._open(work, frame, body.tasks, frame.input, frame.path, frame.scope)
        elif isinstance(body, ForBody):
            self._evaluate(work, frame, Purpose.IN)
        elif isinstance(body, ForkBody):
            self._fork(work, frame, body)
        elif isinstance(body, TryBody):
            self._attempt(work, frame, task, body)
        elif isinstance(body, RaiseBody):
            self._evaluate(work, frame, Purpose.RAISE)
        else:
            assert isinstance(body, WaitBody)
            if body.seconds is None:
                self._evaluate(work, frame, Purpose.WAIT)
            else:
                self._sleep(work, frame, task, body.seconds)

    def _body_done(self, work: _Work, frame: TaskFrame, task: Task, output: Json) -> None:
        frame.phase, frame.output = Phase.OUTPUT, output
        if task.output_as is not None:
            self._evaluate(work, frame, Purpose.OUTPUT)
        else:
            self._export(work, frame, task)

    def _export(self, work: _Work, frame: TaskFrame, task: Task) -> None:
        frame.phase = Phase.EXPORT
        if task.export_as is not None:
            self._evaluate(work, frame, Purpose.EXPORT)
        else:
            self._finish(work, frame, task, TaskStatus.COMPLETED, frame.output)

    def _finish(
        self, work: _Work, frame: TaskFrame, task: Task, status: TaskStatus, output: Json
    ) -> None:
        work.advance.records.append(Ended(frame.key, task, status, work.now, output=output))
        flow = Flow.CONTINUE if status == TaskStatus.SKIPPED else (frame.flow or task.then)
        owner = work.owner(frame)
        if isinstance(owner, ListFrame):
            self._follow(work, owner, output, flow)
        else:
            assert isinstance(owner, TaskFrame)
            self._branch_done(work, owner, frame, output, flow)

    # --- outcomes of one task's steps ---------------------------------------------------------

    def _task_outcome(self, work: _Work, frame: TaskFrame, outcome: Outcome) -> None:
        task = self._definition.task(frame.reference)
        if isinstance(outcome, Faulted):
            self._fault(work, frame, task, outcome.problem)
        elif isinstance(outcome, CallCompleted):
            self._body_done(work, frame, task, outcome.output)
        elif isinstance(outcome, Woke):
            frame.wake_at = ""
            if isinstance(task.body, TryBody):
                frame.attempt += 1
                self._attempt(work, frame, task, task.body)
            else:
                self._body_done(work, frame, task, frame.input)
        elif isinstance(outcome, Evaluated):
            self._evaluated(work, frame, task, outcome.purpose, outcome.value)

    def _evaluated(
        self, work: _Work, frame: TaskFrame, task: Task, purpose: Purpose, value: Json
    ) -> None:
        if purpose == Purpose.IF:
            if truthy(value):
                self._resolve_input(work, frame, task)
            else:
                self._finish(work, frame, task, TaskStatus.SKIPPED, frame.raw)
        elif purpose == Purpose.INPUT:
            self._start_body(work, frame, task, value)
        elif purpose == Purpose.OUTPUT:
            frame.output = value
            self._export(work, frame, task)
        elif purpose == Purpose.EXPORT:
            self._exported(work, frame, task, value)
        elif purpose == Purpose.SET:
            self._body_done(work, frame, task, value)
        else:
            self._control(work, frame, task, purpose, value)

    def _exported(self, work: _Work, frame: TaskFrame, task: Task, value: Json) -> None:
        if not isinstance(value, dict):
            title = f"task {task.name}'s export.as must yield an object"
            detail = f"it yielded {type_name(value)}"
            problem = Problem.of(ErrorType.VALIDATION, title, detail, task.reference)
            self._fault(work, frame, task, problem)
            return
        work.cursor.context = value
        work.advance.records.append(ContextChanged(value))
        self._finish(work, frame, task, TaskStatus.COMPLETED, frame.output)

    def _control(
        self, work: _Work, frame: TaskFrame, task: Task, purpose: Purpose, value: Json
    ) -> None:
        body = task.body
        if purpose == Purpose.CASE:
            assert isinstance(body, SwitchBody)
            if truthy(value):
                frame.flow = body.cases[frame.case].then
                self._body_done(work, frame, task, frame.input)
            else:
                frame.case += 1
                self._next_case(work, frame, task, body)
        elif purpose == Purpose.IN:
            self._items(work, frame, task, value)
        elif purpose == Purpose.WHILE:
            if truthy(value):
                self._iteration(work, frame, task)
            else:
                self._body_done(work, frame, task, frame.output)
        elif purpose in catching.PURPOSES:
            self._catch_evaluated(work, frame, task, purpose, value)
        elif purpose == Purpose.RAISE:
            self._raise(work, frame, task, value)
        elif purpose == Purpose.WAIT:
            seconds = duration_seconds(value)
            if seconds is None:
                title = f"task {task.name}'s wait did not yield a duration"
                detail = "an ISO-8601 duration such as PT30S, or {seconds: 30}"
                problem = Problem.of(ErrorType.EXPRESSION, title, detail, task.reference)
                self._fault(work, frame, task, problem)
            else:
                self._sleep(work, frame, task, seconds)

    # --- switch, for, fork ----------------------------------------------------------------------

    def _next_case(self, work: _Work, frame: TaskFrame, task: Task, body: SwitchBody) -> None:
        while frame.case < len(body.cases) and body.cases[frame.case].when is None:
            frame.case += 1
        if frame.case < len(body.cases):
            self._evaluate(work, frame, Purpose.CASE)
            return
        default = next((c for c in body.cases if c.when is None), None)
        frame.flow = default.then if default is not None else ""
        self._body_done(work, frame, task, frame.input)

    def _items(self, work: _Work, frame: TaskFrame, task: Task, value: Json) -> None:
        limit = self._limits.max_iterations
        if not isinstance(value, list):
            title = f"task {task.name}'s for.in must yield an array"
            detail = f"it yielded {type_name(value)}"
            problem = Problem.of(ErrorType.VALIDATION, title, detail, task.reference)
            self._fault(work, frame, task, problem)
        elif len(value) > limit:
            title = f"task {task.name}'s for.in yielded {len(value)} items; the limit is {limit}"
            detail = "the limit is the setting max_iterations"
            problem = Problem.of(ErrorType.VALIDATION, title, detail, f"{task.reference}/for/in")
            self._fault(work, frame, task, problem)
        else:
            frame.items, frame.item, frame.output = value, 0, frame.input
            self._iterate(work, frame, task)

    def _iterate(self, work: _Work, frame: TaskFrame, task: Task) -> None:
        assert isinstance(task.body, ForBody)
        assert frame.items is not None
        if frame.item >= len(frame.items):
            self._body_done(work, frame, task, frame.output)
        elif task.body.while_ is not None:
            self._evaluate(work, frame, Purpose.WHILE)
        else:
            self._iteration(work, frame, task)

    def _iteration(self, work: _Work, frame: TaskFrame, task: Task) -> None:
        body = task.body
        assert isinstance(body, ForBody)
        path = (*frame.path, f"i{frame.item}")
        self._open(work, frame, body.tasks, frame.output, path, self._loop_scope(frame, body))

    @staticmethod
    def _loop_scope(frame: TaskFrame, body: ForBody) -> JsonObject:
        assert frame.items is not None
        return {**frame.scope, body.each: frame.items[frame.item], body.at: frame.item}

    def _fork(self, work: _Work, frame: TaskFrame, body: ForkBody) -> None:
        count = len(body.branches.tasks)
        frame.branches, frame.results, frame.ended = [None] * count, [None] * count, [""] * count
        for index, branch in enumerate(body.branches.tasks):
            if frame.branches is None:
                return  # a branch ended the fork (or the run) as it began
            child = self._new_frame(work, frame, branch, frame.input, frame.path, frame.scope)
            if child is None:
                return
            frame.branches[index] = child
            work.adopt(child, frame)
            self._begin(work, child, branch)

    def _branch_done(
        self, work: _Work, fork: TaskFrame, branch: TaskFrame, output: Json, flow: str
    ) -> None:
        task = self._definition.task(fork.reference)
        body = task.body
        assert isinstance(body, ForkBody)
        assert fork.branches is not None
        index = _position(fork.branches, branch)
        fork.branches[index] = None
        if flow == Flow.END:
            self._end_workflow(work, fork, output)
            return
        assert fork.results is not None
        assert fork.ended is not None
        fork.results[index], fork.ended[index] = output, "done"
        if body.compete:
            won = self._definition.task(branch.reference).name
            self._cancel_branches(work, fork, f"cancelled: branch {won} completed first")
            self._body_done(work, fork, task, output)
        elif all(fork.ended):
            fork.branches = None
            self._body_done(work, fork, task, list(fork.results))

    def _branch_failed(
        self, work: _Work, fork: TaskFrame, branch: TaskFrame, problem: Problem
    ) -> None:
        task = self._definition.task(fork.reference)
        body = task.body
        assert isinstance(body, ForkBody)
        assert fork.branches is not None
        assert fork.ended is not None
        index = _position(fork.branches, branch)
        fork.branches[index], fork.ended[index] = None, "failed"
        if body.compete and not all(fork.ended):
            fork.failures = [*(fork.failures or []), problem.to_json()]
            return
        first = Problem.from_json(fork.failures[0]) if fork.failures else problem
        self._fault(work, fork, task, first)

    def _cancel_branches(self, work: _Work, fork: TaskFrame, reason: str) -> None:
        for branch in fork.branches or ():
            if branch is not None:
                self._cancel_frame(work, branch, reason)
        fork.branches = None

    # --- try, raise, wait ---------------------------------------------------------------------

    def _attempt(self, work: _Work, frame: TaskFrame, task: Task, body: TryBody) -> None:
        policy = body.catch.retry
        if policy is not None and policy.attempt_timeout_s is not None:
            deadline = work.now + timedelta(seconds=policy.attempt_timeout_s)
            frame.attempt_deadline = iso(deadline)
        path = (*frame.path, f"a{frame.attempt}") if frame.attempt > 1 else frame.path
        self._open(work, frame, body.tasks, frame.input, path, frame.scope)

    def _catch(self, work: _Work, frame: TaskFrame, task: Task, problem: Problem) -> None:
        """The `try` block failed with `problem`: catch it, or let it through."""
        body = task.body
        assert isinstance(body, TryBody)
        frame.body, frame.attempt_deadline = None, ""
        if not catching.matches(body.catch.errors, problem):
            self._fault(work, frame, task, problem)
            return
        frame.error = problem.to_json()
        self._catch_step(work, frame, task, None)

    def _catch_step(self, work: _Work, frame: TaskFrame, task: Task, done: Purpose | None) -> None:
        """The next of the catch's checks after `done` held (None: before any), then what the
        catch does: retry, `catch.do`, or complete."""
        body = task.body
        assert isinstance(body, TryBody)
        assert frame.error is not None
        following = catching.next_check(body.catch, done)
        if following in catching.CATCH_CHECKS:
            self._evaluate(work, frame, following)
            return
        problem = Problem.from_json(frame.error)
        if done is None or done in catching.CATCH_CHECKS:
            work.advance.records.append(Caught(frame.key, task, problem))
        if following is not None:
            self._evaluate(work, frame, following)
            return
        policy = body.catch.retry
        if policy is None:
            self._handle(work, frame, task, retrying=False)
            return
        elapsed = (work.now - parse_iso(frame.started_at)).total_seconds()
        delay = policy.next_delay(frame.attempt, elapsed, self._uniform)
        if delay is None or frame.attempt >= self._limits.max_attempts:
            self._handle(work, frame, task, retrying=True)
            return
        until = work.now + timedelta(seconds=delay)
        frame.wake_at = iso(until)
        work.advance.records.append(Retrying(frame.key, task, frame.attempt + 1, until, problem))
        self._await(work, frame, SLEEP)

    def _catch_evaluated(
        self, work: _Work, frame: TaskFrame, task: Task, purpose: Purpose, value: Json
    ) -> None:
        assert frame.error is not None
        if catching.passes(purpose, value):
            self._catch_step(work, frame, task, purpose)
        elif purpose in catching.RETRY_CHECKS:
            self._handle(work, frame, task, retrying=True)
        else:
            self._fault(work, frame, task, Problem.from_json(frame.error))

    def _handle(self, work: _Work, frame: TaskFrame, task: Task, retrying: bool) -> None:
        """The error is caught and will not be retried (again): `catch.do`, else the task
        completes with its input or, when it has a retry policy, the error goes through."""
        body = task.body
        assert isinstance(body, TryBody)
        assert frame.error is not None
        if body.catch.tasks is not None:
            frame.in_catch = True
            scope = {**frame.scope, body.catch.as_: frame.error}
            self._open(work, frame, body.catch.tasks, frame.input, frame.path, scope)
        elif retrying:
            self._fault(work, frame, task, Problem.from_json(frame.error))
        else:
            self._body_done(work, frame, task, frame.input)

    def _raise(self, work: _Work, frame: TaskFrame, task: Task, value: Json) -> None:
        body = task.body
        assert isinstance(body, RaiseBody)
        fields = value if isinstance(value, dict) else {}
        title, detail = fields.get("title"), fields.get("detail")
        problem = Problem(
            type=body.error.type,
            status=body.error.status,
            title="" if title is None else title if isinstance(title, str) else str(title),
            detail="" if detail is None else detail if isinstance(detail, str) else str(detail),
            instance=task.reference,
        )
        self._fault(work, frame, task, problem)

    def _sleep(self, work: _Work, frame: TaskFrame, task: Task, seconds: float) -> None:
        limit = self._limits.max_wait_s
        if seconds > limit:
            title = f"task {task.name} would wait {seconds:g} s; the limit is {limit:g} s"
            problem = Problem.of(ErrorType.VALIDATION, title, "setting max_wait_s", task.reference)
            self._fault(work, frame, task, problem)
            return
        until = work.now + timedelta(seconds=seconds)
        frame.wake_at = iso(until)
        work.advance.records.append(Waiting(frame.key, task, until))
        self._await(work, frame, SLEEP)

    # --- faults and cancels ---------------------------------------------------------------------

    def _fault(self, work: _Work, frame: TaskFrame, task: Task, problem: Problem) -> None:
        """The instance fails with `problem`, which goes up to the nearest `try` whose block
        holds it, failing every instance on the way; with none, the run fails."""
        self._cancel_children(work, frame, f"cancelled: task {task.name} failed")
        if frame.pending:
            work.stop(frame.key)
            frame.pending = ""
        work.advance.records.append(
            Ended(frame.key, task, TaskStatus.FAILED, work.now, problem=problem)
        )
        owner = work.owner(frame)
        if isinstance(owner, TaskFrame):
            self._branch_failed(work, owner, frame, problem)
        else:
            assert owner is not None
            owner.task = None
            self._fault_owner(work, owner, problem)

    def _fault_owner(self, work: _Work, owner: ListFrame | TaskFrame, problem: Problem) -> None:
        """A failure inside `owner` (a list, or a fork) that its own instance cannot absorb."""
        if isinstance(owner, TaskFrame):
            self._fault(work, owner, self._definition.task(owner.reference), problem)
            return
        holder = work.owner(owner)
        if holder is None:
            self._fail_run(work, problem)
            return
        assert isinstance(holder, TaskFrame)
        task = self._definition.task(holder.reference)
        if isinstance(task.body, TryBody) and not holder.in_catch:
            self._catch(work, holder, task, problem)
        else:
            self._fault(work, holder, task, problem)

    def _cancel_frame(self, work: _Work, frame: TaskFrame, reason: str) -> None:
        self._cancel_children(work, frame, reason)
        if frame.pending:
            work.stop(frame.key)
            frame.pending = ""
        task = self._definition.task(frame.reference)
        work.advance.records.append(
            Ended(frame.key, task, TaskStatus.CANCELLED, work.now, reason=reason)
        )

    def _cancel_children(self, work: _Work, frame: TaskFrame, reason: str) -> None:
        if frame.body is not None:
            self._cancel_list(work, frame.body, reason)
            frame.body = None
        if frame.branches is not None:
            self._cancel_branches(work, frame, reason)

    def _cancel_list(self, work: _Work, lst: ListFrame, reason: str) -> None:
        if lst.task is not None:
            self._cancel_frame(work, lst.task, reason)
            lst.task = None

    # --- steps --------------------------------------------------------------------------------

    def _open(
        self,
        work: _Work,
        frame: TaskFrame,
        tasks: TaskList,
        data: Json,
        path: tuple[str, ...],
        scope: JsonObject,
    ) -> None:
        """Run the list `tasks` inside `frame`, from its first task, on `data`."""
        frame.body = ListFrame(tasks.reference, 0, data, path, scope)
        work.owners[id(frame.body)] = frame
        self._enter(work, frame.body)

    def _evaluate(self, work: _Work, frame: TaskFrame, purpose: Purpose) -> None:
        self._await(work, frame, purpose)

    def _await(self, work: _Work, frame: TaskFrame, pending: str) -> None:
        frame.pending = pending
        work.advance.steps.append(self._step_of(work, frame))

    def _step_of(self, work: _Work, frame: TaskFrame) -> Step:
        task = self._definition.task(frame.reference)
        if frame.pending == CALL:
            variables = self._variables(work, frame, task, input=frame.input)
            return CallStep(frame.key, task, frame.input, variables, frame.path)
        if frame.pending == SLEEP:
            return Sleep(frame.key, parse_iso(frame.wake_at))
        return self._evaluation(work, frame, task, Purpose(frame.pending))

    def _evaluation(self, work: _Work, frame: TaskFrame, task: Task, purpose: Purpose) -> Evaluate:
        ref, body = task.reference, task.body
        with_input = self._variables(work, frame, task, input=frame.input)
        if purpose == Purpose.IF:
            variables = self._variables(work, frame, task)
            return Evaluate(frame.key, purpose, task.if_, frame.raw, variables, f"{ref}/if")
        if purpose == Purpose.INPUT:
            variables = self._variables(work, frame, task)
            where = f"{ref}/input/from"
            return Evaluate(frame.key, purpose, task.input_from, frame.raw, variables, where)
        if purpose == Purpose.OUTPUT:
            where = f"{ref}/output/as"
            return Evaluate(frame.key, purpose, task.output_as, frame.output, with_input, where)
        if purpose == Purpose.EXPORT:
            variables = {**with_input, "output": frame.output}
            where = f"{ref}/export/as"
            return Evaluate(frame.key, purpose, task.export_as, frame.output, variables, where)
        if isinstance(body, SetBody):
            where = f"{ref}/set"
            return Evaluate(frame.key, purpose, body.value, frame.input, with_input, where, True)
        if isinstance(body, SwitchBody):
            case = body.cases[frame.case]
            where = f"{ref}/switch/{frame.case}/{case.name}/when"
            return Evaluate(frame.key, purpose, case.when, frame.input, with_input, where)
        if isinstance(body, ForBody):
            if purpose == Purpose.IN:
                return Evaluate(
                    frame.key, purpose, body.in_, frame.input, with_input, f"{ref}/for/in"
                )
            variables = {**with_input, **self._loop_scope(frame, body)}
            return Evaluate(
                frame.key, purpose, body.while_, frame.output, variables, f"{ref}/while"
            )
        if isinstance(body, TryBody):
            assert frame.error is not None
            expr, where = catching.check_expression(body.catch, purpose, ref)
            variables = {**with_input, body.catch.as_: frame.error}
            return Evaluate(frame.key, purpose, expr, frame.error, variables, where)
        if isinstance(body, RaiseBody):
            fields: JsonObject = {"title": body.error.title, "detail": body.error.detail}
            return Evaluate(
                frame.key, purpose, fields, frame.input, with_input, f"{ref}/raise/error", True
            )
        assert isinstance(body, WaitBody)
        return Evaluate(
            frame.key, purpose, body.expression, frame.input, with_input, f"{ref}/wait", True
        )

    def _variables(self, work: _Work, frame: TaskFrame, task: Task, **extra: Json) -> JsonObject:
        about: JsonObject = {
            "name": task.name,
            "reference": task.reference,
            "startedAt": frame.started_at,
        }
        return {**frame.scope, "context": work.cursor.context, "task": about, **extra}


def _awaits(frame: TaskFrame, outcome: Outcome) -> bool:
    """Whether `outcome` answers the step the frame waits for (a fault answers any)."""
    if isinstance(outcome, Evaluated):
        return frame.pending == outcome.purpose.value
    if isinstance(outcome, CallCompleted):
        return frame.pending == CALL
    if isinstance(outcome, Woke):
        return frame.pending == SLEEP
    return bool(frame.pending)


def _position(branches: list[TaskFrame | None], branch: TaskFrame) -> int:
    return next(i for i, candidate in enumerate(branches) if candidate is branch)


def walk(cursor: Cursor) -> Iterator[TaskFrame]:
    """Every live task instance of the cursor."""
    return iter(_Work(cursor).frames.values())
