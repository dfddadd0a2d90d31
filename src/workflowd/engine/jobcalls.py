"""One run's calls to the jobs system, with each failure translated into the problem its task
records (and counted by kind)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from workflowd.domain.definition import Task
from workflowd.domain.jobs import (
    IdempotencyConflict,
    JobInfo,
    JobNotFound,
    JobRejected,
    JobRequest,
    JobsCommunicationError,
    JobsError,
    JobState,
)
from workflowd.domain.run import ErrorType, Problem
from workflowd.engine.deps import EngineDeps
from workflowd.engine.problems import StepFailed

log = logging.getLogger("workflowd.engine")

# How long a task's end waits for a cancel to be confirmed before it records its outcome;
# an unconfirmed cancel goes on in the background (`OrphanJobs`).
CANCEL_NOW_S = 2.0


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    confirmed: bool
    """Whether the jobs system took the cancel (or the job had ended, or is gone)."""
    note: str
    """What happened, for the task's problem."""


class JobCalls:
    def __init__(self, deps: EngineDeps, run_id: str, company: str) -> None:
        self._deps = deps
        self._run_id = run_id
        self._company = company

    async def submit(self, task: Task, request: JobRequest) -> JobInfo:
        try:
            return await self._deps.jobs.submit(request, self._company)
        except JobRejected as exc:
            title = f"the jobs API refused task {task.name}'s job"
            raise self._failure(task, exc, "rejected", title) from exc
        except IdempotencyConflict as exc:
            title = f"task {task.name}'s job conflicts with another under its idempotency key"
            raise self._failure(task, exc, "conflict", title) from exc
        except JobsCommunicationError as exc:
            title = f"cannot reach the jobs system for task {task.name}"
            raise self._failure(task, exc, "communication", title) from exc

    async def wait(self, task: Task, job_id: str) -> JobInfo:
        """The job's terminal state. A failure to learn it leaves the job possibly running."""
        try:
            return await self._deps.jobs.wait(job_id, self._company)
        except JobNotFound as exc:
            title = f"task {task.name}'s job {job_id} vanished from the jobs system"
            raise self._failure(task, exc, "vanished", title) from exc
        except JobRejected as exc:
            title = f"the jobs API refused to report on task {task.name}'s job {job_id}"
            raise self._failure(task, exc, "rejected", title, job_may_run=True) from exc
        except JobsCommunicationError as exc:
            title = f"cannot reach the jobs system for task {task.name}"
            raise self._failure(task, exc, "communication", title, job_may_run=True) from exc

    async def cancel(self, task: Task, job_id: str) -> CancelOutcome:
        """Ask the job to stop, for at most `CANCEL_NOW_S`, and say how that went."""
        try:
            info = await self._deps.jobs.cancel(
                job_id, self._company, retry_deadline_s=CANCEL_NOW_S
            )
        except JobNotFound:
            return CancelOutcome(True, f"its job {job_id} is gone from the jobs system")
        except JobsError as exc:
            log.warning(
                "could not cancel job %s: %s", job_id, exc,
                extra={"run_id": self._run_id, "task": task.name, "job_id": job_id},
            )  # fmt: skip
            return CancelOutcome(
                False,
                f"its job {job_id} may still be running: the jobs system did not confirm the "
                "cancel, which workflowd keeps retrying",
            )
        if info.state in (JobState.CANCELLED, JobState.PENDING_CANCELLATION):
            return CancelOutcome(True, f"its job {job_id} was cancelled")
        return CancelOutcome(True, f"its job {job_id} had already ended ({info.state})")

    async def find(self, task: Task, key: str) -> JobInfo | None:
        """The job an earlier process may have submitted under `key` (looked up, not created)."""
        try:
            return await self._deps.jobs.find(self._run_id, key, self._company)
        except JobsError as exc:
            title = f"cannot learn whether task {task.name}'s job was submitted"
            raise self._failure(task, exc, "communication", title) from exc

    def _failure(
        self,
        task: Task,
        exc: JobsError,
        kind: str,
        title: str,
        job_may_run: bool = False,
    ) -> StepFailed:
        self._deps.metrics.jobs_api_errors.labels(kind).inc()
        if isinstance(exc, JobsCommunicationError):
            error_type = ErrorType.COMMUNICATION
        elif isinstance(exc, JobRejected) and exc.status == 401:
            error_type = ErrorType.AUTHENTICATION
        elif isinstance(exc, JobRejected) and exc.status == 403:
            error_type = ErrorType.AUTHORIZATION
        else:
            error_type = ErrorType.RUNTIME
        problem = Problem.of(error_type, title, exc.message, task.reference)
        return StepFailed(problem, job_may_run=job_may_run)
