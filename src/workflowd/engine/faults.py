"""When a task fails: a fault goes up the tree to the nearest `try` that catches it, which
retries its block or runs `catch.do`; `raise` faults on purpose; timeouts fault a task, an
attempt or the run; and the instances a failure, a winner or a stop leaves behind are cancelled.
"""

from __future__ import annotations

from datetime import timedelta

from workflowd.domain.definition import RaiseBody, Task, TryBody
from workflowd.domain.json import Json, JsonObject
from workflowd.domain.retry import Uniform
from workflowd.domain.run import ErrorType, Problem, RunStatus, TaskStatus
from workflowd.engine import catching
from workflowd.engine.cursor import ListFrame, TaskFrame
from workflowd.engine.flow import (
    RUN_KEY,
    Caught,
    Ended,
    Evaluate,
    Purpose,
    Retrying,
    Stopped,
    TimedOut,
)
from workflowd.engine.kinds import Core, Kind
from workflowd.engine.loops import Fork
from workflowd.engine.problems import with_note
from workflowd.engine.work import SLEEP, Work, iso, parse_iso


class Try(Kind):
    """A `try`: its block, then for an error it catches the catch's checks, the retries its
    policy allows, and `catch.do` (the choices: `interpreter.py`)."""

    def __init__(self, core: Core, uniform: Uniform) -> None:
        super().__init__(core)
        self._uniform = uniform

    def start(self, work: Work, frame: TaskFrame, task: Task) -> None:
        self._attempt(work, frame, task)

    def woke(self, work: Work, frame: TaskFrame, task: Task) -> None:
        frame.attempt += 1
        self._attempt(work, frame, task)

    def evaluation(
        self, frame: TaskFrame, task: Task, purpose: Purpose, variables: JsonObject
    ) -> Evaluate:
        body = task.body
        assert isinstance(body, TryBody)
        assert frame.error is not None
        expr, where = catching.check_expression(body.catch, purpose, task.reference)
        variables = {**variables, body.catch.as_: frame.error}
        return Evaluate(frame.key, purpose, expr, frame.error, variables, where)

    def evaluated(
        self, work: Work, frame: TaskFrame, task: Task, purpose: Purpose, value: Json
    ) -> None:
        assert frame.error is not None
        if catching.passes(purpose, value):
            self._catch_step(work, frame, task, purpose)
        elif purpose in catching.RETRY_CHECKS:
            self._handle(work, frame, task, retrying=True)
        else:
            self.core.fault(work, frame, task, Problem.from_json(frame.error))

    def catch(self, work: Work, frame: TaskFrame, task: Task, problem: Problem) -> None:
        """The `try` block failed with `problem`: catch it, or let it through."""
        body = task.body
        assert isinstance(body, TryBody)
        frame.body, frame.attempt_deadline = None, ""
        if not catching.matches(body.catch.errors, problem):
            self.core.fault(work, frame, task, problem)
            return
        frame.error = problem.to_json()
        self._catch_step(work, frame, task, None)

    def _attempt(self, work: Work, frame: TaskFrame, task: Task) -> None:
        body = task.body
        assert isinstance(body, TryBody)
        policy = body.catch.retry
        if policy is not None and policy.attempt_timeout_s is not None:
            deadline = work.now + timedelta(seconds=policy.attempt_timeout_s)
            frame.attempt_deadline = iso(deadline)
        self.core.open(
            work, frame, body.tasks, frame.input, (*frame.path, f"a{frame.attempt}"), frame.scope
        )

    def _catch_step(self, work: Work, frame: TaskFrame, task: Task, done: Purpose | None) -> None:
        """The next of the catch's checks after `done` held (None: before any), then what the
        catch does: retry, `catch.do`, or complete."""
        body = task.body
        assert isinstance(body, TryBody)
        assert frame.error is not None
        following = catching.next_check(body.catch, done)
        if following in catching.CATCH_CHECKS:
            self.core.await_step(work, frame, following)
            return
        problem = Problem.from_json(frame.error)
        if done is None or done in catching.CATCH_CHECKS:
            work.advance.records.append(Caught(frame.key, task, problem))
        if following is not None:
            self.core.await_step(work, frame, following)
            return
        policy = body.catch.retry
        if policy is None:
            self._handle(work, frame, task, retrying=False)
            return
        elapsed = (work.now - parse_iso(frame.started_at)).total_seconds()
        delay = policy.next_delay(frame.attempt, elapsed, self._uniform)
        if delay is None:
            self._handle(work, frame, task, retrying=True)
            return
        most = self.core.limits.max_attempts
        if frame.attempt >= most:
            note = f"not retried again: {task.reference} reached max_attempts ({most} attempts)"
            self._handle(work, frame, task, retrying=True, note=note)
            return
        until = work.now + timedelta(seconds=delay)
        frame.wake_at = iso(until)
        work.advance.records.append(Retrying(frame.key, task, frame.attempt + 1, until, problem))
        self.core.await_step(work, frame, SLEEP)

    def _handle(
        self, work: Work, frame: TaskFrame, task: Task, retrying: bool, note: str = ""
    ) -> None:
        """The error is caught and will not be retried (again): `catch.do`, else the task
        completes with its input or, when it has a retry policy, the error goes through."""
        body = task.body
        assert isinstance(body, TryBody)
        assert frame.error is not None
        if body.catch.tasks is not None:
            frame.in_catch = True
            scope = {**frame.scope, body.catch.as_: frame.error}
            self.core.open(work, frame, body.catch.tasks, frame.input, frame.path, scope)
        elif retrying:
            problem = Problem.from_json(frame.error)
            self.core.fault(work, frame, task, with_note(problem, note) if note else problem)
        else:
            self.core.body_done(work, frame, task, frame.input)


class Raise(Kind):
    def start(self, work: Work, frame: TaskFrame, task: Task) -> None:
        self.core.await_step(work, frame, Purpose.RAISE)

    def evaluation(
        self, frame: TaskFrame, task: Task, purpose: Purpose, variables: JsonObject
    ) -> Evaluate:
        assert isinstance(task.body, RaiseBody)
        error, where = task.body.error, f"{task.reference}/raise/error"
        fields: JsonObject = {"title": error.title, "detail": error.detail}
        return Evaluate(frame.key, purpose, fields, frame.input, variables, where, True)

    def evaluated(
        self, work: Work, frame: TaskFrame, task: Task, purpose: Purpose, value: Json
    ) -> None:
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
        self.core.fault(work, frame, task, problem)


class Faults:
    """How a failure goes up the tree, and how the instances it leaves behind end."""

    def __init__(self, core: Core, fork: Fork, trying: Try) -> None:
        self._core = core
        self._fork = fork
        self._try = trying

    def fault(self, work: Work, frame: TaskFrame, task: Task, problem: Problem) -> None:
        """The instance fails with `problem`, which goes up to the nearest `try` whose block
        holds it, failing every instance on the way; with none, the run fails."""
        self.cancel_children(work, frame, f"cancelled: task {task.name} failed")
        if frame.pending:
            work.stop(frame.key)
            frame.pending = ""
        work.advance.records.append(
            Ended(frame.key, task, TaskStatus.FAILED, work.now, problem=problem)
        )
        owner = work.owner(frame)
        if isinstance(owner, TaskFrame):
            self._fork.branch_failed(work, owner, frame, problem)
        else:
            assert owner is not None
            owner.task = None
            self.fault_owner(work, owner, problem)

    def fault_owner(self, work: Work, owner: ListFrame | TaskFrame, problem: Problem) -> None:
        """A failure inside `owner` (a list, or a fork) that its own instance cannot absorb."""
        definition = self._core.definition
        if isinstance(owner, TaskFrame):
            self.fault(work, owner, definition.task(owner.reference), problem)
            return
        holder = work.holder(owner)
        if holder is None:
            self._core.fail_run(work, problem)
            return
        task = definition.task(holder.reference)
        if isinstance(task.body, TryBody) and not holder.in_catch:
            self._try.catch(work, holder, task, problem)
        else:
            self.fault(work, holder, task, problem)

    def timed_out(self, work: Work, outcome: TimedOut) -> None:
        definition = self._core.definition
        if outcome.key == RUN_KEY:
            title = f"the workflow timed out after {definition.timeout_s or 0:g} s"
            self._core.fail_run(work, Problem.of(ErrorType.TIMEOUT, title, "", "/"))
            return
        frame = work.frames.get(outcome.key)
        if frame is None:
            return
        task = definition.task(frame.reference)
        if outcome.attempt and frame.attempt_deadline:
            assert isinstance(task.body, TryBody)
            assert task.body.catch.retry is not None
            seconds = task.body.catch.retry.attempt_timeout_s or 0
            title = f"attempt {frame.attempt} of task {task.name} timed out after {seconds:g} s"
            problem = Problem.of(ErrorType.TIMEOUT, title, "", task.reference)
            self.cancel_children(work, frame, f"cancelled: {title}")
            self._try.catch(work, frame, task, problem)
        elif not outcome.attempt and frame.deadline:
            title = f"task {task.name} timed out after {task.timeout_s or 0:g} s"
            problem = Problem.of(ErrorType.TIMEOUT, title, "", task.reference)
            self.fault(work, frame, task, problem)

    def halt(self, work: Work, frame: TaskFrame, stop: Stopped) -> None:
        """`frame` and everything inside it end, innermost first, as the run stops."""
        children = [*(b for b in frame.branches or () if b is not None)]
        if frame.body is not None and frame.body.task is not None:
            children.append(frame.body.task)
        for child in children:
            self.halt(work, child, stop)
        frame.body, frame.branches = None, None
        if frame.pending:
            work.stop(frame.key)
            frame.pending = ""
        task = self._core.definition.task(frame.reference)
        if stop.status == RunStatus.FAILED:
            ended = Ended(frame.key, task, TaskStatus.FAILED, work.now, problem=stop.problem)
        else:
            problem = stop.problem if frame.key == stop.key else None
            ended = Ended(
                frame.key, task, TaskStatus.CANCELLED, work.now, problem=problem,
                reason=stop.reason,
            )  # fmt: skip
        work.advance.records.append(ended)

    def cancel(self, work: Work, frame: TaskFrame, reason: str) -> None:
        self.cancel_children(work, frame, reason)
        if frame.pending:
            work.stop(frame.key)
            frame.pending = ""
        task = self._core.definition.task(frame.reference)
        work.advance.records.append(
            Ended(frame.key, task, TaskStatus.CANCELLED, work.now, reason=reason)
        )

    def cancel_children(self, work: Work, frame: TaskFrame, reason: str) -> None:
        if frame.body is not None:
            if frame.body.task is not None:
                self.cancel(work, frame.body.task, reason)
                frame.body.task = None
            frame.body = None
        if frame.branches is not None:
            self.cancel_branches(work, frame, reason)

    def cancel_branches(self, work: Work, fork: TaskFrame, reason: str) -> None:
        for branch in fork.branches or ():
            if branch is not None:
                self.cancel(work, branch, reason)
        fork.branches = None
