"""The interpreter's core: the life of the run, of its task lists and of each task instance.

The run evaluates its `input.from`, runs its `do` list and evaluates its `output.as`; a list
runs its tasks one at a time and follows their `then`; an instance goes through `if`,
`input.from`, its body (handed to its kind: `kinds.py`, `loops.py`, `faults.py`), `output.as`
and `export.as`. The kinds reach this core through `kinds.Core`.
"""

from __future__ import annotations

from datetime import timedelta

from workflowd.domain.definition import (
    Flow,
    FlowLimits,
    Task,
    TaskKind,
    TaskList,
    WorkflowDefinition,
)
from workflowd.domain.json import Json, JsonObject
from workflowd.domain.retry import Uniform
from workflowd.domain.run import ErrorType, Problem, RunStatus, TaskStatus
from workflowd.engine.cursor import ListFrame, Path, Phase, RunPhase, TaskFrame, instance_key
from workflowd.engine.faults import Faults, Raise, Try
from workflowd.engine.flow import (
    CallCompleted,
    ContextChanged,
    Ended,
    Evaluated,
    Faulted,
    InputResolved,
    Outcome,
    Purpose,
    RunEnd,
    Started,
    Step,
    Stopped,
    TimedOut,
    Woke,
)
from workflowd.engine.kinds import Call, Do, Kind, Set, Switch, Wait
from workflowd.engine.loops import For, Fork
from workflowd.engine.steps import awaited, run_evaluation
from workflowd.engine.work import Work, iso, truthy
from workflowd.spec.fields import type_name


class Lifecycle:
    """The core the kinds reach through `kinds.Core`; `Interpreter` drives it."""

    def __init__(
        self, definition: WorkflowDefinition, limits: FlowLimits, uniform: Uniform
    ) -> None:
        self.definition = definition
        self.limits = limits
        self._fork = Fork(self)
        trying = Try(self, uniform)
        self._faults = Faults(self, self._fork, trying)
        self._kinds: dict[TaskKind, Kind] = {
            TaskKind.CALL: Call(self),
            TaskKind.SET: Set(self),
            TaskKind.SWITCH: Switch(self),
            TaskKind.DO: Do(self),
            TaskKind.FOR: For(self),
            TaskKind.FORK: self._fork,
            TaskKind.TRY: trying,
            TaskKind.RAISE: Raise(self),
            TaskKind.WAIT: Wait(self),
        }

    # --- the run ------------------------------------------------------------------------------

    def start(self, work: Work) -> None:
        """The run begins: its `input.from`, else its list."""
        if self.definition.input_from is None:
            self._run_body(work, work.cursor.data)
            return
        work.cursor.pending = Purpose.RUN_INPUT
        work.advance.steps.append(run_evaluation(self.definition, work.cursor, Purpose.RUN_INPUT))

    def run_outcome(self, work: Work, outcome: Outcome) -> None:
        cursor = work.cursor
        purpose, cursor.pending = cursor.pending, ""
        if isinstance(outcome, Faulted):
            self.fail_run(work, outcome.problem)
        elif isinstance(outcome, Evaluated) and outcome.purpose == purpose:
            if purpose == Purpose.RUN_INPUT:
                self._run_body(work, outcome.value)
            else:
                self._complete_run(work, outcome.value)
        else:
            cursor.pending = purpose

    def _run_body(self, work: Work, data: Json) -> None:
        cursor = work.cursor
        cursor.phase = RunPhase.BODY
        cursor.root = ListFrame(self.definition.do.reference, 0, data, ())
        work.owners[id(cursor.root)] = None
        self.enter(work, cursor.root)

    def _run_output(self, work: Work, data: Json) -> None:
        cursor = work.cursor
        cursor.phase, cursor.data, cursor.root = RunPhase.OUTPUT, data, None
        if self.definition.output_as is None:
            self._complete_run(work, data)
            return
        cursor.pending = Purpose.RUN_OUTPUT
        work.advance.steps.append(run_evaluation(self.definition, work.cursor, Purpose.RUN_OUTPUT))

    def _complete_run(self, work: Work, output: Json) -> None:
        work.cursor.phase, work.cursor.output = RunPhase.DONE, output
        work.advance.end = RunEnd(RunStatus.COMPLETED, output=output)

    def fail_run(self, work: Work, problem: Problem) -> None:
        self.stop(work, Stopped(problem.title, problem, RunStatus.FAILED))

    def stop(self, work: Work, stop: Stopped) -> None:
        """End the run now: every live instance ends (CANCELLED with the reason, or FAILED with
        the problem), its step with it."""
        cursor = work.cursor
        if cursor.root is not None and cursor.root.task is not None:
            self._faults.halt(work, cursor.root.task, stop)
        cursor.phase, cursor.root, cursor.pending = RunPhase.DONE, None, ""
        work.advance.end = RunEnd(
            stop.status,
            problem=stop.problem if stop.status == RunStatus.FAILED else None,
            reason=stop.reason if stop.status == RunStatus.CANCELLED else "",
        )

    # --- lists --------------------------------------------------------------------------------

    def _list(self, lst: ListFrame) -> TaskList:
        return self.definition.task_list(lst.reference)

    def enter(self, work: Work, lst: ListFrame) -> None:
        tasks = self._list(lst).tasks
        if lst.index >= len(tasks):
            self._list_done(work, lst)
            return
        task = tasks[lst.index]
        if lst.index in lst.seen:
            # A task that runs again in this list (a `then` jumped back) is a new instance.
            lst.generation, lst.seen = lst.generation + 1, []
        lst.seen.append(lst.index)
        frame = self.new_frame(work, lst, task, lst.data, lst.instance_path(), lst.scope)
        if frame is not None:
            lst.task = frame
            work.adopt(frame, lst)
            self.begin(work, frame, task)

    def new_frame(
        self,
        work: Work,
        owner: ListFrame | TaskFrame,
        task: Task,
        raw: Json,
        path: Path,
        scope: JsonObject,
    ) -> TaskFrame | None:
        cursor = work.cursor
        if cursor.order >= self.limits.max_instances:
            limit = self.limits.max_instances
            title = f"the run has started {limit} task instances, its limit (max_instances)"
            problem = Problem.of(ErrorType.RUNTIME, title, "", task.reference)
            self._faults.fault_owner(work, owner, problem)
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
        parent = work.holder(owner) if isinstance(owner, ListFrame) else owner
        parent_key = parent.key if parent is not None else ""
        work.advance.records.append(
            Started(frame.key, task, path, frame.order, parent_key, work.now)
        )
        return frame

    def _list_done(self, work: Work, lst: ListFrame) -> None:
        owner = work.holder(lst)
        if owner is None:
            self._run_output(work, lst.data)
            return
        owner.body = None
        task = self.definition.task(owner.reference)
        self._kind(task).done(work, owner, task, lst.data)

    def _follow(self, work: Work, lst: ListFrame, output: Json, flow: str) -> None:
        """The task at `lst.index` ended with `output`: where the flow goes from there."""
        lst.task, lst.data = None, output
        if flow == Flow.END:
            self.end_workflow(work, work.holder(lst), output)
        elif flow == Flow.EXIT:
            self._list_done(work, lst)
        elif flow == Flow.CONTINUE:
            lst.index += 1
            self.enter(work, lst)
        else:
            lst.index = self._list(lst).position(flow)
            self.enter(work, lst)

    def end_workflow(self, work: Work, holder: TaskFrame | None, output: Json) -> None:
        """`then: end` inside `holder` (None: in the run's own list): the tasks around the one
        that said it complete with its output, every other live instance is cancelled, and the
        run's `output.as` comes next."""
        reason = "cancelled: the workflow ended (then: end)"
        while holder is not None:
            holder.body = None
            self._faults.cancel_branches(work, holder, reason)
            task = self.definition.task(holder.reference)
            work.advance.records.append(
                Ended(holder.key, task, TaskStatus.COMPLETED, work.now, output=output)
            )
            up = work.owner(holder)
            holder = work.holder(up) if isinstance(up, ListFrame) else up
        self._run_output(work, output)

    # --- one task -----------------------------------------------------------------------------

    def _kind(self, task: Task) -> Kind:
        return self._kinds[task.kind]

    def begin(self, work: Work, frame: TaskFrame, task: Task) -> None:
        if task.if_ is not None:
            self.await_step(work, frame, Purpose.IF)
        else:
            self._resolve_input(work, frame, task)

    def _resolve_input(self, work: Work, frame: TaskFrame, task: Task) -> None:
        frame.phase = Phase.INPUT
        if task.input_from is not None:
            self.await_step(work, frame, Purpose.INPUT)
        else:
            self._start_body(work, frame, task, frame.raw)

    def _start_body(self, work: Work, frame: TaskFrame, task: Task, task_input: Json) -> None:
        frame.phase, frame.input = Phase.BODY, task_input
        work.advance.records.append(InputResolved(frame.key, task, task_input))
        self._kind(task).start(work, frame, task)

    def body_done(self, work: Work, frame: TaskFrame, task: Task, output: Json) -> None:
        frame.phase, frame.output = Phase.OUTPUT, output
        if task.output_as is not None:
            self.await_step(work, frame, Purpose.OUTPUT)
        else:
            self._export(work, frame, task)

    def _export(self, work: Work, frame: TaskFrame, task: Task) -> None:
        frame.phase = Phase.EXPORT
        if task.export_as is not None:
            self.await_step(work, frame, Purpose.EXPORT)
        else:
            self._finish(work, frame, task, TaskStatus.COMPLETED, frame.output)

    def _finish(
        self, work: Work, frame: TaskFrame, task: Task, status: TaskStatus, output: Json
    ) -> None:
        work.advance.records.append(Ended(frame.key, task, status, work.now, output=output))
        flow = Flow.CONTINUE if status == TaskStatus.SKIPPED else (frame.flow or task.then)
        owner = work.owner(frame)
        if isinstance(owner, ListFrame):
            self._follow(work, owner, output, flow)
        else:
            assert isinstance(owner, TaskFrame)
            self._fork.branch_done(work, owner, frame, output, flow)

    # --- failures and cancels, in faults.py -------------------------------------------------

    def fault(self, work: Work, frame: TaskFrame, task: Task, problem: Problem) -> None:
        self._faults.fault(work, frame, task, problem)

    def cancel_branches(self, work: Work, fork: TaskFrame, reason: str) -> None:
        self._faults.cancel_branches(work, fork, reason)

    def timed_out(self, work: Work, outcome: TimedOut) -> None:
        self._faults.timed_out(work, outcome)

    # --- outcomes of one task's steps ---------------------------------------------------------

    def task_outcome(self, work: Work, frame: TaskFrame, outcome: Outcome) -> None:
        task = self.definition.task(frame.reference)
        if isinstance(outcome, Faulted):
            self.fault(work, frame, task, outcome.problem)
        elif isinstance(outcome, CallCompleted):
            self.body_done(work, frame, task, outcome.output)
        elif isinstance(outcome, Woke):
            frame.wake_at = ""
            self._kind(task).woke(work, frame, task)
        elif isinstance(outcome, Evaluated):
            self._evaluated(work, frame, task, outcome.purpose, outcome.value)

    def _evaluated(
        self, work: Work, frame: TaskFrame, task: Task, purpose: Purpose, value: Json
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
        else:
            self._kind(task).evaluated(work, frame, task, purpose, value)

    def _exported(self, work: Work, frame: TaskFrame, task: Task, value: Json) -> None:
        if not isinstance(value, dict):
            title = f"task {task.name}'s export.as must yield an object"
            detail = f"it yielded {type_name(value)}"
            problem = Problem.of(ErrorType.VALIDATION, title, detail, task.reference)
            self.fault(work, frame, task, problem)
            return
        work.cursor.context = value
        work.advance.records.append(ContextChanged(value))
        self._finish(work, frame, task, TaskStatus.COMPLETED, frame.output)

    # --- steps --------------------------------------------------------------------------------

    def open(
        self,
        work: Work,
        frame: TaskFrame,
        tasks: TaskList,
        data: Json,
        path: Path,
        scope: JsonObject,
    ) -> None:
        frame.body = ListFrame(tasks.reference, 0, data, path, scope)
        work.owners[id(frame.body)] = frame
        self.enter(work, frame.body)

    def await_step(self, work: Work, frame: TaskFrame, pending: str) -> None:
        frame.pending = pending
        work.advance.steps.append(self.step_of(work, frame))

    def step_of(self, work: Work, frame: TaskFrame) -> Step:
        task = self.definition.task(frame.reference)
        return awaited(work, frame, task, self._kind(task))
