"""Re-runs: a new run of the same version, for the same instant, that replays the run it re-runs
up to a point and goes on live from there.

Replaying is interpreting the same definition again, with the same data: the interpreter takes
the same path, and each call, wait or backoff it reaches before the point answers at once with
the outcome it had (its job is not submitted again: the instance is shown as reused, with the
job that made it). From the point on, every step is live. So a re-run from the failed task
reuses what completed before it, in a loop, a branch or a `try` as well as in a straight line.
"""

from __future__ import annotations

import asyncio

from workflowd.domain.errors import FailedPrecondition, InvalidRequest
from workflowd.domain.run import Run, RunStatus, TaskRun, TaskStatus
from workflowd.engine.flow import CallCompleted, Faulted, Outcome

FROM_FAILURE = "failure"
FROM_START = "start"


def replay_point(original: Run, start: str) -> int:
    """The place in `original`'s order from which a re-run goes live: its instances before it
    are replayed. `start` is `failure`, `start` or a task reference."""
    if original.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.CANCELLING):
        raise FailedPrecondition(
            f"run {original.id} has not ended: cancel it, or wait for its end, before a re-run"
        )
    if start == FROM_START:
        return 0
    if start == FROM_FAILURE:
        if original.status == RunStatus.COMPLETED:
            raise FailedPrecondition(
                f"run {original.id} completed: re-run it from the start or from a task"
            )
        return _failure_point(original)
    ran = [t.order for t in original.tasks if t.reference == start]
    if not ran:
        raise InvalidRequest(
            "start",
            f"no task {start} ran in run {original.id}: re-run from `failure`, from `start`, "
            "or from the reference of a task that ran",
        )
    return min(ran)


def _failure_point(run: Run) -> int:
    """Where the run failed: the last instance of the task its error names; else (a timeout, a
    cancel) the first instance its end stopped; else after everything (`output.as` failed)."""
    if run.error is not None and run.error.instance:
        failed = [
            t.order
            for t in run.tasks
            if t.reference == run.error.instance and t.status == TaskStatus.FAILED
        ]
        if failed:
            return max(failed)
    stopped = [
        t.order
        for t in run.tasks
        if t.status in (TaskStatus.FAILED, TaskStatus.CANCELLED) and t.ended_at == run.ended_at
    ]
    if stopped:
        return min(stopped)
    return max((t.order for t in run.tasks), default=0) + 1


def replayed(original: Run, until: int) -> dict[str, TaskRun]:
    """The instances of `original` a re-run replays, by key."""
    return {t.key: t for t in original.tasks if t.order < until}


async def replay_call(key: str, instance: TaskRun) -> Outcome:
    """What the call answered in the run replayed. One that was cancelled there (a branch that
    lost) waits here too, until the same decision cancels it again."""
    if instance.status == TaskStatus.COMPLETED:
        return CallCompleted(key, instance.output)
    if instance.status == TaskStatus.FAILED and instance.error is not None:
        return Faulted(key, instance.error)
    never: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    return await never
