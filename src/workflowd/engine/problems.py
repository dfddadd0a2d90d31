"""What a task that cannot go on records: `StepFailed` carries the problem, the status the task
ends in, and whether its job may still be running (then it is cancelled before the task ends)."""

from __future__ import annotations

from workflowd.domain.definition import Task
from workflowd.domain.jobs import JobInfo, JobState
from workflowd.domain.run import ErrorType, Problem, TaskStatus


class StepFailed(Exception):
    def __init__(
        self,
        problem: Problem,
        task_status: TaskStatus = TaskStatus.FAILED,
        *,
        job_may_run: bool = False,
    ) -> None:
        super().__init__(problem.title)
        self.problem = problem
        self.task_status = task_status
        self.job_may_run = job_may_run


def job_failed(task: Task, info: JobInfo) -> Problem:
    """A job that did not complete. A query the jobs system refused is the user's to fix: its
    status is 400 (the type stays `runtime`, as the DSL has no type for it)."""
    detail = "; ".join(info.failure_messages) or f"job {info.job_id} ended {info.state}"
    if info.state == JobState.CANCELLED:
        title = f"the jobs system cancelled task {task.name}'s job {info.job_id} on its own"
    elif info.query_refused:
        title = f"task {task.name} failed: the jobs system refused its query (job {info.job_id})"
        return Problem(ErrorType.RUNTIME.uri, 400, title, detail, task.reference)
    else:
        title = f"task {task.name} failed: job {info.job_id} failed"
    return Problem.of(ErrorType.RUNTIME, title, detail, task.reference)


def with_note(problem: Problem, note: str) -> Problem:
    """The problem with one more thing said (what became of the task's job)."""
    detail = f"{problem.detail}; {note}" if problem.detail else note
    return Problem(problem.type, problem.status, problem.title, detail, problem.instance)
