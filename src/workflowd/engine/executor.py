"""One run, executed task by task: resolve, commit the intent, submit, await, record, export.

The executor is the only writer of its run's task states. Each write is a transaction that also
appends the run's events, which are published to watchers after the commit.
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
from workflowd.domain.json import Json, JsonObject
from workflowd.domain.run import ErrorType, Problem, Run, RunEvent, RunStatus, TaskStatus
from workflowd.engine.deps import EngineDeps
from workflowd.engine.ports import RunTransaction
from workflowd.engine.steps import StepFailed, TaskStep

log = logging.getLogger("workflowd.engine")

_JOB_ID_RECORD_DELAY_S = 0.02


@dataclass(frozen=True, slots=True)
class _Prepared:
    now: datetime
    task_input: Json
    request: JobRequest


@dataclass(frozen=True, slots=True)
class _Started:
    request: JobRequest
    job_id: str
    task_input: Json
    # Started by this process and not yet sent: no job can exist for it.
    unsent: bool = False


class RunExecutor:
    def __init__(self, deps: EngineDeps, run: Run, definition: WorkflowDefinition) -> None:
        self._deps = deps
        self._run = run
        self._definition = definition
        self._cancel = asyncio.Event()
        self._current = 0
        self._task_began = 0.0
        self._unrecorded_job: tuple[TaskDefinition, str] | None = None
        if run.status == RunStatus.CANCELLING:
            self._cancel.set()

    @property
    def run_id(self) -> str:
        return self._run.id

    def request_cancel(self) -> None:
        self._cancel.set()

    async def execute(self) -> None:
        try:
            await self._execute()
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:
            # A bug must not leave the run active forever: record it and end the run.
            log.exception(
                "run %s failed on an internal error", self._run.id, extra={"run_id": self._run.id}
            )
            problem = Problem.of(
                ErrorType.RUNTIME, "workflowd hit an internal error", f"{type(exc).__name__}: {exc}"
            )
            await self._finish(self._current, problem, RunStatus.FAILED, abandon_running=True)

    async def _execute(self) -> None:
        run = self._run
        started_at = run.started_at
        if started_at is None:
            if self._cancel.is_set():
                # Cancelled before it ever started: nothing ran, nothing to stop.
                await self._finish(0, None, RunStatus.CANCELLED)
                return
            started_at = self._deps.clock.now()
            at = started_at

            def start(tx: RunTransaction) -> None:
                if tx.run_status == RunStatus.PENDING:
                    tx.set_run_status(RunStatus.RUNNING, started_at=at)

            await self._commit(start)
        step = TaskStep(self._deps, run, self._definition, started_at)
        try:
            raw_input, context, first = await step.resume_point()
        except StepFailed as failure:
            await self._finish(0, failure.problem, RunStatus.FAILED)
            return
        tasks = self._definition.tasks
        started: _Started | None = None
        for index in range(first, len(tasks)):
            self._current = index
            task = tasks[index]
            if started is None:
                # A task left RUNNING by a previous process may have a live job: resume it, and
                # `_wait` (seeing the cancel) stops that job and records the task's end.
                resumable = self._run.tasks[index].status == TaskStatus.RUNNING
                if self._cancel.is_set() and not resumable:
                    await self._finish(index, None, RunStatus.CANCELLED)
                    return
                try:
                    started = await self._start_task(step, task, raw_input, context)
                except StepFailed as failure:
                    await self._fail_task(task, failure)
                    return
            elif started.unsent and self._cancel.is_set():
                await self._finish(index, None, RunStatus.CANCELLED, TaskStatus.CANCELLED)
                return
            outcome = await self._run_task(step, task, started, context)
            if outcome is None:
                return
            raw_input, context, started = outcome
        await self._complete(step, raw_input, context)

    async def _run_task(
        self, step: TaskStep, task: TaskDefinition, started: _Started, context: JsonObject
    ) -> tuple[Json, JsonObject, _Started | None] | None:
        """The task's output, the new context and the next task if it was started with this
        one's completion; None when the run has ended."""
        status = TaskStatus.FAILED
        try:
            info = await self._await_job(step, task, started)
            if info.state == JobState.COMPLETED:
                output, new_context = await step.finish(task, info, started.task_input, context)
                return await self._complete_task(step, task, output, new_context)
            problem = step.job_problem(task, info)
            if info.state == JobState.CANCELLED:
                status = TaskStatus.CANCELLED
        except StepFailed as failure:
            problem, status = failure.problem, failure.task_status
        cancelled = self._cancel.is_set() or status == TaskStatus.CANCELLED
        run_status = RunStatus.CANCELLED if cancelled else RunStatus.FAILED
        await self._finish(task.index, problem, run_status, task_status=status)
        return None

    async def _start_task(
        self, step: TaskStep, task: TaskDefinition, raw_input: Json, context: JsonObject
    ) -> _Started:
        self._task_began = asyncio.get_running_loop().time()
        current = self._run.tasks[task.index]
        if current.status == TaskStatus.RUNNING:
            # Recovery: re-send the stored request unchanged, never a re-evaluation.
            request = await step.stored_request(task)
            return _Started(request, current.job_id, current.input)
        prepared = await self._prepare(step, task, raw_input, context)
        await self._commit(lambda tx: self._record_intent(tx, task, prepared))
        self._deps.crash_point("after_intent_commit")
        return _Started(prepared.request, "", prepared.task_input, unsent=True)

    async def _prepare(
        self, step: TaskStep, task: TaskDefinition, raw_input: Json, context: JsonObject
    ) -> _Prepared:
        now = self._deps.clock.now()
        task_input, request = await step.resolve(task, raw_input, context, now)
        return _Prepared(now, task_input, request)

    @staticmethod
    def _record_intent(tx: RunTransaction, task: TaskDefinition, prepared: _Prepared) -> None:
        """The task starts: its input and the exact job request, committed before the POST."""
        tx.set_task_status(
            task.index,
            task.name,
            TaskStatus.RUNNING,
            input=prepared.task_input,
            job_request=prepared.request.to_json(),
            started_at=prepared.now,
        )

    async def _complete_task(
        self, step: TaskStep, task: TaskDefinition, output: Json, context: JsonObject
    ) -> tuple[Json, JsonObject, _Started | None] | None:
        """Record the task's completion and, in the same transaction, the next task's intent:
        one commit between a job's end and the next job's submission."""
        following = self._definition.tasks[task.index + 1 :]
        upcoming = following[0] if following and not self._cancel.is_set() else None
        prepared: _Prepared | None = None
        failure: StepFailed | None = None
        if upcoming is not None:
            try:
                prepared = await self._prepare(step, upcoming, output, context)
            except StepFailed as exc:
                failure = exc
        now = self._deps.clock.now()

        record_job_id = self._job_id_recorder()

        def change(tx: RunTransaction) -> None:
            record_job_id(tx)
            tx.set_task_status(
                task.index, task.name, TaskStatus.COMPLETED, output=output, ended_at=now
            )
            tx.set_context(context)
            if upcoming is not None and prepared is not None:
                self._record_intent(tx, upcoming, prepared)

        await self._commit(change)
        self._observe_task(task, TaskStatus.COMPLETED)
        self._task_began = asyncio.get_running_loop().time()
        if upcoming is not None and failure is not None:
            self._current = upcoming.index
            await self._fail_task(upcoming, failure)
            return None
        if prepared is None:
            return output, context, None
        self._deps.crash_point("after_intent_commit")
        return output, context, _Started(prepared.request, "", prepared.task_input, unsent=True)

    async def _fail_task(self, task: TaskDefinition, failure: StepFailed) -> None:
        await self._finish(
            task.index, failure.problem, RunStatus.FAILED, task_status=failure.task_status
        )

    async def _await_job(self, step: TaskStep, task: TaskDefinition, started: _Started) -> JobInfo:
        began = asyncio.get_running_loop().time()
        job_id = started.job_id
        if not job_id:
            info = await step.submit(task, started.request)
            self._deps.crash_point("after_submit")
            job_id = info.job_id
            self._unrecorded_job = (task, job_id)
            if not info.state.terminal:
                # A job that ends quickly gets its id recorded with its end, in one commit;
                # a longer one has it recorded on the side, for watchers, shortly after the POST.
                # Either way a crash before the record re-sends the intent under the same key.
                timer = asyncio.get_running_loop().call_later(
                    _JOB_ID_RECORD_DELAY_S, self._record_job_id
                )
                try:
                    info = await self._wait(step, task, job_id)
                finally:
                    timer.cancel()
        else:
            info = await self._wait(step, task, job_id)
        self._deps.crash_point("after_job_completed")
        waited = asyncio.get_running_loop().time() - began
        self._deps.metrics.job_wait.labels(task.call).observe(waited)
        return info

    def _record_job_id(self) -> None:
        record = self._job_id_recorder()
        self._commit_nowait(record)

    def _job_id_recorder(self) -> Callable[[RunTransaction], None]:
        """A change that records the submitted job's id if nothing has yet (taken here, on the
        event loop: changes themselves run on the store's writer thread)."""
        pending, self._unrecorded_job = self._unrecorded_job, None

        def record(tx: RunTransaction) -> None:
            if pending is not None:
                tx.set_job_id(pending[0].index, pending[0].name, pending[1])

        return record

    async def _wait(self, step: TaskStep, task: TaskDefinition, job_id: str) -> JobInfo:
        """The job's terminal state; on cancel or timeout the job is cancelled first."""
        waiter = asyncio.ensure_future(step.wait(task, job_id))
        canceller = asyncio.ensure_future(self._cancel.wait())
        try:
            timeout = step.remaining_timeout(task, self._deps.clock.now())
            done, _ = await asyncio.wait(
                {waiter, canceller}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter in done:
                return waiter.result()
            await step.cancel_job(task, job_id)
            timed_out = canceller not in done
            try:
                info = await self._wait_after_cancel(step, task, waiter)
            except StepFailed as failure:
                # A timeout stays a timeout (FAILED), even when the job ignores the cancel.
                if timed_out:
                    raise StepFailed(step.timeout_problem(task)) from failure
                raise
            if not timed_out or info.state != JobState.CANCELLED:
                return info
            raise StepFailed(step.timeout_problem(task))
        finally:
            waiter.cancel()
            canceller.cancel()
            with contextlib.suppress(asyncio.CancelledError, StepFailed):
                await waiter

    async def _wait_after_cancel(
        self, step: TaskStep, task: TaskDefinition, waiter: asyncio.Future[JobInfo]
    ) -> JobInfo:
        try:
            async with asyncio.timeout(self._deps.limits.cancel_grace_s):
                return await asyncio.shield(waiter)
        except TimeoutError as exc:
            raise StepFailed(
                Problem.of(
                    ErrorType.RUNTIME,
                    f"task {task.name}'s job did not stop within "
                    f"{self._deps.limits.cancel_grace_s:g} s of its cancellation",
                    instance=task.reference,
                ),
                TaskStatus.CANCELLED,
            ) from exc

    def _observe_task(self, task: TaskDefinition, status: TaskStatus) -> None:
        took = asyncio.get_running_loop().time() - self._task_began
        self._deps.metrics.task_duration.labels(task.call, status.value).observe(took)

    async def _complete(self, step: TaskStep, last_output: Json, context: JsonObject) -> None:
        try:
            output = await step.workflow_output(last_output, context)
        except StepFailed as failure:
            await self._finish(len(self._definition.tasks), failure.problem, RunStatus.FAILED)
            return
        now = self._deps.clock.now()
        await self._commit(
            lambda tx: tx.set_run_status(RunStatus.COMPLETED, output=output, ended_at=now)
        )

    async def _finish(
        self,
        index: int,
        problem: Problem | None,
        run_status: RunStatus,
        task_status: TaskStatus | None = None,
        abandon_running: bool = False,
    ) -> None:
        """Fail fast: record the task's end, skip every later task, end the run."""
        now = self._deps.clock.now()
        tasks = self._definition.tasks
        if problem is None:
            problem = Problem.of(ErrorType.RUNTIME, "run cancelled", "cancelled on request")
        error = problem.to_json()

        record_job_id = self._job_id_recorder()

        def change(tx: RunTransaction) -> None:
            record_job_id(tx)
            if task_status is not None:
                task = tasks[index]
                tx.set_task_status(index, task.name, task_status, error=error, ended_at=now)
            for later in tasks[index:]:
                current = tx.task_status(later.index)
                if current == TaskStatus.PENDING:
                    tx.set_task_status(later.index, later.name, TaskStatus.SKIPPED)
                elif current == TaskStatus.RUNNING and abandon_running:
                    tx.set_task_status(
                        later.index, later.name, TaskStatus.FAILED, error=error, ended_at=now
                    )
            if not tx.run_status.terminal:
                tx.set_run_status(run_status, error=error, ended_at=now)

        await self._commit(change)
        if task_status is not None:
            self._observe_task(tasks[index], task_status)

    def _commit_nowait(
        self, change: Callable[[RunTransaction], None]
    ) -> asyncio.Future[list[RunEvent]]:
        future = self._deps.store.update_run(self._run.id, self._deps.clock.now(), change)
        future.add_done_callback(self._publish)
        return future

    async def _commit(self, change: Callable[[RunTransaction], None]) -> None:
        await self._commit_nowait(change)

    def _publish(self, future: asyncio.Future[list[RunEvent]]) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            log.error(
                "run %s: a state change failed to commit: %s",
                self._run.id,
                future.exception(),
                extra={"run_id": self._run.id},
            )
            return
        events = future.result()
        self._deps.hub.publish(events)
        self._deps.metrics.observe_events(events)
