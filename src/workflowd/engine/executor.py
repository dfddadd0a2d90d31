"""The life of one run, read top down (docs/architecture.md draws it):

    execute ─ start the run ─ resume point ─┬─ for each task: begin ─ run its job ─ complete ─┐
                                             └─────────────── complete the run ◄──────────────┘

- *begin* commits the task's intent (its exact job request) before anything is submitted;
- *run its job* submits it (or re-attaches to it after a restart) and waits for its end, a
  cancel request or a timeout;
- *complete* commits the task's completion, its exported context and, in the same transaction,
  the next task's intent: one commit between a job's end and the next job's submission.

A task that cannot complete *ends* instead: its end, the skipping of every later task and the
run's end are one commit. If its job may still be running then, the job is cancelled first and
the task's problem says whether the jobs system confirmed it; an unconfirmed cancel is stored
and retried in the background (`OrphanJobs`), across restarts.

The executor is the only writer of its run's task states. Each commit also appends the run's
events, published to watchers once the commit is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from workflowd.domain.definition import TaskDefinition, WorkflowDefinition
from workflowd.domain.jobs import JobInfo, JobRequest, JobState
from workflowd.domain.json import Json
from workflowd.domain.run import (
    ErrorType,
    Problem,
    Run,
    RunEvent,
    RunEventType,
    RunStatus,
    RunTaken,
    TaskStatus,
)
from workflowd.engine import problems
from workflowd.engine.dataflow import DataFlow, Position
from workflowd.engine.deadlines import Deadlines
from workflowd.engine.deps import EngineDeps
from workflowd.engine.jobcalls import JobCalls
from workflowd.engine.ports import RunTransaction
from workflowd.engine.problems import StepFailed

log = logging.getLogger("workflowd.engine")

# A job that ends this soon after its submission has its id recorded with its end (one commit);
# a longer one has it recorded on the side, for watchers.
_JOB_ID_RECORD_DELAY_S = 0.02


@dataclass(slots=True)
class Intent:
    """A task whose exact job request is committed: the task is RUNNING in the store."""

    task: TaskDefinition
    request: JobRequest | None
    """None for an intent resumed with its job id known: nothing will be submitted for it."""
    task_input: Json
    started_at: datetime
    job_id: str = ""
    may_exist: bool = False
    """Whether a job may exist although its id is unknown (an earlier process committed the
    intent and may have submitted it before it stopped)."""


@dataclass(frozen=True, slots=True)
class Ending:
    """How a task that does not complete ends, and with it the run."""

    task_status: TaskStatus
    problem: Problem | None
    run_status: RunStatus
    reason: str = ""
    """Who or what cancelled the run."""
    job_may_run: bool = False

    @classmethod
    def failed(cls, failure: StepFailed, reason: str) -> Ending:
        if failure.task_status == TaskStatus.CANCELLED:
            return cls(
                TaskStatus.CANCELLED, failure.problem, RunStatus.CANCELLED, reason,
                failure.job_may_run,
            )  # fmt: skip
        return cls(
            TaskStatus.FAILED, failure.problem, RunStatus.FAILED, job_may_run=failure.job_may_run
        )


@dataclass(frozen=True, slots=True)
class _Completed:
    """A task completed: where the run stands, and the next task if its intent rode along."""

    position: Position
    next_intent: Intent | None


class RunExecutor:
    def __init__(self, deps: EngineDeps, run: Run, definition: WorkflowDefinition) -> None:
        self._deps = deps
        self._run = run
        self._definition = definition
        self._cancel = asyncio.Event()
        self._cancel_reason = run.cancel_reason or "cancelled on request"
        if run.status == RunStatus.CANCELLING:
            self._cancel.set()
        self._current: Intent | None = None
        self._job_id_timer: asyncio.TimerHandle | None = None
        self._job_id_record: asyncio.Future[list[RunEvent]] | None = None
        self._task_began = 0.0
        self._calls = JobCalls(deps, run.id, run.company)
        self.taken = False

    @property
    def run_id(self) -> str:
        return self._run.id

    def request_cancel(self, reason: str) -> None:
        self._cancel_reason = reason
        self._cancel.set()

    async def execute(self) -> None:
        try:
            await self._execute()
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except RunTaken as exc:
            # Adopted by another replica while this one's lease had run out: the run goes on
            # there, and nothing more is written or cancelled from here.
            log.warning("run %s: %s; stopping here", self.run_id, exc, extra=self._log())
            self.taken = True
        except Exception as exc:
            # A bug must not leave the run active forever, nor its job running unwatched.
            log.exception("run %s failed on an internal error", self.run_id, extra=self._log())
            await self._end_on_internal_error(exc)

    # --- the run, top down --------------------------------------------------------------------

    async def _execute(self) -> None:
        started_at = await self._start_run()
        if started_at is None:
            return
        self._flow = DataFlow(self._deps, self._run, self._definition, started_at)
        self._deadlines = Deadlines(self._definition, started_at)
        try:
            position = await self._flow.resume_point()
        except StepFailed as failure:
            await self._end_before(self._definition.tasks[0], Ending.failed(failure, ""))
            return
        intent: Intent | None = None
        for task in self._definition.tasks[position.index :]:
            intent = intent or await self._begin(task, position)
            if intent is None:
                return
            self._current = intent
            outcome = await self._run_job(intent)
            if isinstance(outcome, Ending):
                await self._end(task, intent.job_id, outcome)
                return
            completed = await self._complete(intent, outcome, position)
            if completed is None:
                return
            position, intent = completed.position, completed.next_intent
        await self._complete_run(position)

    async def _start_run(self) -> datetime | None:
        """The run's start instant (recorded now unless an earlier process did); None when it
        was cancelled before it ever started."""
        if self._run.started_at is not None:
            return self._run.started_at
        if self._cancel.is_set():
            await self._end_cancelled_before(0)
            return None
        at = self._deps.clock.now()

        def start(tx: RunTransaction) -> None:
            if tx.run_status == RunStatus.PENDING:
                tx.start_run(at)

        await self._commit(start)
        return at

    async def _begin(self, task: TaskDefinition, position: Position) -> Intent | None:
        """The task's committed intent; None when the run ended instead."""
        self._task_began = asyncio.get_running_loop().time()
        stored = self._run.tasks[task.index]
        if stored.status == TaskStatus.RUNNING:
            request = None
            if not stored.job_id:  # only a job that may not exist yet needs its request
                try:
                    request = await self._flow.stored_request(task)
                except StepFailed as failure:
                    await self._end(task, stored.job_id, Ending.failed(failure, ""))
                    return None
            started = stored.started_at or self._deps.clock.now()
            return Intent(task, request, stored.input, started, stored.job_id, may_exist=True)
        if self._cancel.is_set():
            await self._end_cancelled_before(task.index)
            return None
        try:
            intent = await self._prepare(task, position)
        except StepFailed as failure:
            await self._end_before(task, Ending.failed(failure, self._cancel_reason))
            return None
        await self._commit(intent_recorder(intent))
        self._deps.crash_point("after_intent_commit")
        return intent

    async def _prepare(self, task: TaskDefinition, position: Position) -> Intent:
        """Resolve the task's input and job request (nothing is written yet)."""
        now = self._deps.clock.now()
        self._deadlines.check_workflow(task, now)
        resolved = await self._flow.resolve(task, position, now)
        return Intent(task, resolved.request, resolved.task_input, now)

    async def _run_job(self, intent: Intent) -> JobInfo | Ending:
        """Submit the job (or find the one already submitted) and wait for its end."""
        try:
            if not intent.job_id and not await self._submit(intent):
                return Ending(TaskStatus.CANCELLED, None, RunStatus.CANCELLED, self._cancel_reason)
            info = await self._wait(intent)
        except StepFailed as failure:
            return Ending.failed(failure, self._cancel_reason)
        self._deps.crash_point("after_job_completed")
        if info.state == JobState.COMPLETED:
            return info
        if info.state == JobState.CANCELLED and self._cancel.is_set():
            return Ending(TaskStatus.CANCELLED, None, RunStatus.CANCELLED, self._cancel_reason)
        problem = problems.job_failed(intent.task, info)
        if info.state == JobState.CANCELLED:
            return Ending(TaskStatus.CANCELLED, problem, RunStatus.CANCELLED, problem.title)
        return Ending(TaskStatus.FAILED, problem, RunStatus.FAILED)

    async def _submit(self, intent: Intent) -> bool:
        """Give the intent a job; False when the run was cancelled before one existed.

        After a cancel, nothing more is submitted: an intent an earlier process may have sent is
        looked up by its idempotency key instead (and then cancelled by `_wait`)."""
        task, request = intent.task, intent.request
        assert request is not None, "an intent without a job id carries its request"
        if self._cancel.is_set():
            key = request.idempotency_key
            found = await self._calls.find(task, key) if intent.may_exist else None
            if found is None:
                return False
            intent.job_id = found.job_id
            return True
        self._deadlines.check_workflow(task, self._deps.clock.now())
        info = await self._calls.submit(task, request)
        self._deps.crash_point("after_submit")
        intent.job_id = info.job_id
        if not info.state.terminal:
            self._record_job_id_soon(intent)
        return True

    async def _wait(self, intent: Intent) -> JobInfo:
        """The job's terminal state; on a cancel request or a timeout the job is cancelled
        first, and a job that will not stop fails the task with its job possibly running."""
        task, job_id = intent.task, intent.job_id
        began = asyncio.get_running_loop().time()
        waiter = asyncio.ensure_future(self._calls.wait(task, job_id))
        cancelled = asyncio.ensure_future(self._cancel.wait())
        try:
            limit = self._deadlines.wait_limit(task, intent.started_at, self._deps.clock.now())
            done, _ = await asyncio.wait(
                {waiter, cancelled}, timeout=limit.seconds, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter in done:
                return waiter.result()
            timed_out = cancelled not in done
            await self._calls.cancel(task, job_id)
            info = await self._wait_after_cancel(task, waiter, timed_out, limit.task_expires)
            if timed_out and info.state == JobState.CANCELLED:
                timeout = problems.timeout(task, self._definition, limit.task_expires)
                raise StepFailed(timeout)
            return info
        finally:
            waiter.cancel()
            cancelled.cancel()
            with contextlib.suppress(asyncio.CancelledError, StepFailed):
                await waiter
            waited = asyncio.get_running_loop().time() - began
            self._deps.metrics.job_wait.labels(task.call).observe(waited)

    async def _wait_after_cancel(
        self,
        task: TaskDefinition,
        waiter: asyncio.Future[JobInfo],
        timed_out: bool,
        task_expired: bool,
    ) -> JobInfo:
        grace = self._deps.limits.cancel_grace_s
        try:
            async with asyncio.timeout(grace):
                return await asyncio.shield(waiter)
        except TimeoutError as exc:
            if timed_out:  # a timeout stays a timeout, even when the job ignores the cancel
                problem = problems.timeout(task, self._definition, task_expired)
                raise StepFailed(problem, job_may_run=True) from exc
            title = f"task {task.name}'s job did not stop within {grace:g} s of its cancellation"
            problem = Problem.of(ErrorType.RUNTIME, title, "", task.reference)
            raise StepFailed(problem, TaskStatus.CANCELLED, job_may_run=True) from exc
        except StepFailed as failure:
            if not timed_out:
                raise
            problem = problems.timeout(task, self._definition, task_expired)
            raise StepFailed(problem, job_may_run=failure.job_may_run) from failure

    async def _complete(
        self, intent: Intent, info: JobInfo, position: Position
    ) -> _Completed | None:
        """Record the task's completion and, in the same commit, the next task's intent (its
        inputs are resolved first, so the next job's POST follows one commit after this job's
        end). None when the run ended instead."""
        task = intent.task
        try:
            after = await self._flow.output(task, info, intent.task_input, position.context)
        except StepFailed as failure:
            await self._end(task, intent.job_id, Ending.failed(failure, self._cancel_reason))
            return None
        # The end is stamped before the next task is prepared: its start is never earlier.
        ended_at = self._deps.clock.now()
        upcoming = self._next_task(task)
        next_intent: Intent | None = None
        unprepared: StepFailed | None = None
        if upcoming is not None:
            try:
                next_intent = await self._prepare(upcoming, after)
            except StepFailed as exc:
                unprepared = exc
        record_job_id = self._job_id_recorder()
        output, job_id = after.raw_input, intent.job_id

        def change(tx: RunTransaction) -> None:
            record_job_id(tx)
            tx.complete_task(task.index, task.name, output=output, job_id=job_id, at=ended_at)
            tx.set_context(after.context)
            if next_intent is not None:
                intent_recorder(next_intent)(tx)

        await self._commit(change)
        self._observe_task(task, TaskStatus.COMPLETED)
        if upcoming is not None and unprepared is not None:
            self._current = None
            await self._end_before(upcoming, Ending.failed(unprepared, self._cancel_reason))
            return None
        if next_intent is not None:
            self._deps.crash_point("after_intent_commit")
        return _Completed(after, next_intent)

    async def _complete_run(self, position: Position) -> None:
        try:
            output = await self._flow.run_output(position)
        except StepFailed as failure:
            await self._end_run(RunStatus.FAILED, failure.problem)
            return
        now = self._deps.clock.now()
        await self._commit(lambda tx: tx.end_run(RunStatus.COMPLETED, now, output=output))

    # --- endings ------------------------------------------------------------------------------

    async def _end(self, task: TaskDefinition, job_id: str, ending: Ending) -> None:
        """A running task ends without completing, and with it the run (one commit)."""
        problem = ending.problem
        confirmed = True
        if ending.job_may_run and job_id:
            outcome = await self._calls.cancel(task, job_id)
            confirmed = outcome.confirmed
            if problem is not None:
                problem = problems.with_note(problem, outcome.note)
        now = self._deps.clock.now()
        record_job_id = self._job_id_recorder()
        status = ending.task_status

        def change(tx: RunTransaction) -> None:
            record_job_id(tx)
            tx.end_task(task.index, task.name, status, problem=problem, job_id=job_id, at=now)
            if not confirmed:
                tx.cancel_job_later(job_id, task.index)
            self._end_run_in(tx, task.index + 1, ending, problem, now)

        await self._commit(change)
        if not confirmed:
            self._deps.orphans.keep_cancelling(job_id, self._run.company)
        self._observe_task(task, status)

    async def _end_before(self, task: TaskDefinition, ending: Ending) -> None:
        """A task that never started (its inputs could not be resolved) ends the run."""
        now = self._deps.clock.now()
        status, problem = ending.task_status, ending.problem

        def change(tx: RunTransaction) -> None:
            if tx.task_status(task.index) == TaskStatus.PENDING:
                tx.end_task(task.index, task.name, status, problem=problem, job_id="", at=now)
            self._end_run_in(tx, task.index + 1, ending, problem, now)

        await self._commit(change)

    async def _end_cancelled_before(self, index: int) -> None:
        """Cancelled before the task at `index` started: nothing of it ran, nothing to stop."""
        ending = Ending(TaskStatus.CANCELLED, None, RunStatus.CANCELLED, self._cancel_reason)
        now = self._deps.clock.now()
        await self._commit(lambda tx: self._end_run_in(tx, index, ending, None, now))

    async def _end_run(self, status: RunStatus, problem: Problem | None) -> None:
        now = self._deps.clock.now()
        await self._commit(lambda tx: tx.end_run(status, now, problem=problem))

    def _end_run_in(
        self,
        tx: RunTransaction,
        first_skipped: int,
        ending: Ending,
        problem: Problem | None,
        now: datetime,
    ) -> None:
        """Skip every later task that has not started, and end the run: FAILED with the
        problem, or CANCELLED with its reason and no problem (a cancel is not an error)."""
        for later in self._definition.tasks[first_skipped:]:
            if tx.task_status(later.index) == TaskStatus.PENDING:
                tx.skip_task(later.index, later.name)
        if tx.run_status.terminal:
            return
        if ending.run_status == RunStatus.CANCELLED:
            tx.end_run(RunStatus.CANCELLED, now, reason=ending.reason or self._cancel_reason)
        else:
            tx.end_run(ending.run_status, now, problem=problem)

    async def _end_on_internal_error(self, exc: Exception) -> None:
        problem = Problem.of(
            ErrorType.RUNTIME, "workflowd hit an internal error", f"{type(exc).__name__}: {exc}"
        )
        ending = Ending(TaskStatus.FAILED, problem, RunStatus.FAILED, job_may_run=True)
        intent = self._current
        try:
            if intent is not None:
                await self._end(intent.task, intent.job_id, ending)
            else:
                await self._end_run(RunStatus.FAILED, problem)
        except Exception:
            log.exception("run %s: recording the internal error failed too", self.run_id)

    # --- helpers ------------------------------------------------------------------------------

    def _next_task(self, task: TaskDefinition) -> TaskDefinition | None:
        following = self._definition.tasks[task.index + 1 :]
        return following[0] if following and not self._cancel.is_set() else None

    def _record_job_id_soon(self, intent: Intent) -> None:
        """Record the job id on the side shortly after the POST (for watchers); a job that
        ends first has it recorded with its end instead, and a failed side commit is made good
        by the end's commit, which always carries the job id."""
        task, job_id = intent.task, intent.job_id

        def record() -> None:
            self._job_id_record = self._commit_nowait(
                lambda tx: tx.record_job(task.index, task.name, job_id)
            )

        self._job_id_timer = asyncio.get_running_loop().call_later(_JOB_ID_RECORD_DELAY_S, record)

    def _job_id_recorder(self) -> Callable[[RunTransaction], None]:
        """A change that records the current job's id (if the side commit did not already),
        so that the TASK_JOB_SUBMITTED event always precedes the task's end."""
        if self._job_id_timer is not None:
            self._job_id_timer.cancel()
            self._job_id_timer = None
        intent = self._current
        if intent is None or not intent.job_id:
            return lambda tx: None
        task, job_id = intent.task, intent.job_id
        return lambda tx: tx.record_job(task.index, task.name, job_id)

    def _observe_task(self, task: TaskDefinition, status: TaskStatus) -> None:
        took = asyncio.get_running_loop().time() - self._task_began
        self._deps.metrics.task_duration.labels(task.call, status.value).observe(took)
        self._task_began = asyncio.get_running_loop().time()

    def _log(self) -> dict[str, str]:
        intent = self._current
        fields = {"run_id": self.run_id}
        if intent is not None:
            fields.update(task=intent.task.name, job_id=intent.job_id)
        return fields

    def _commit_nowait(
        self, change: Callable[[RunTransaction], None]
    ) -> asyncio.Future[list[RunEvent]]:
        future = self._deps.store.update_run(self.run_id, self._deps.clock.now(), change)
        future.add_done_callback(self._publish)
        return future

    async def _commit(self, change: Callable[[RunTransaction], None]) -> None:
        await self._commit_nowait(change)

    def _publish(self, future: asyncio.Future[list[RunEvent]]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.error(
                "run %s: a state change failed to commit: %s", self.run_id, error,
                extra=self._log(),
            )  # fmt: skip
            return
        events = future.result()
        self._deps.hub.publish(events)
        self._deps.metrics.observe_events(events)
        for event in events:
            if event.type in _LOGGED:
                _log_event(event)


_LOGGED = frozenset(
    {
        RunEventType.TASK_COMPLETED,
        RunEventType.TASK_FAILED,
        RunEventType.TASK_CANCELLED,
        RunEventType.RUN_COMPLETED,
        RunEventType.RUN_FAILED,
        RunEventType.RUN_CANCELLED,
    }
)


def _log_event(event: RunEvent) -> None:
    """One line per task end and per run end, with the run, task and job as fields."""
    fields = {"run_id": event.run_id, "task": event.task_name, "job_id": event.job_id}
    what = event.type.value.replace("_", " ")
    if event.task_name:
        detail = f" (job {event.job_id})" if event.job_id else ""
        message = f"run {event.run_id}: task {event.task_name} {what.split()[-1]}{detail}"
    else:
        message = f"run {event.run_id} {what.split()[-1]}"
    if event.error is not None:
        message += f": {event.error.title}"
    elif event.reason:
        message += f": {event.reason}"
    log.info(message, extra=fields)


def intent_recorder(intent: Intent) -> Callable[[RunTransaction], None]:
    """The change that commits a task's intent: RUNNING, with its input and exact request."""
    assert intent.request is not None, "only a prepared intent is recorded"
    task, request = intent.task, intent.request.to_json()

    def record(tx: RunTransaction) -> None:
        tx.start_task(
            task.index, task.name, task_input=intent.task_input, request=request,
            at=intent.started_at,
        )  # fmt: skip

    return record
