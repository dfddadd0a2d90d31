"""What a task that cannot go on records: `StepFailed` carries the problem, the status the task
ends in, and whether its job may still be running (then it is cancelled before the task ends)."""

from __future__ import annotations

from workflowd.domain.definition import TaskDefinition, WorkflowDefinition
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


def timeout(task: TaskDefinition, definition: WorkflowDefinition, task_expired: bool) -> Problem:
    if task_expired and task.timeout_s is not None:
        title = f"task {task.name} timed out after {task.timeout_s:g} s"
    else:
        title = f"the workflow timed out after {definition.timeout_s:g} s"
    return Problem.of(ErrorType.TIMEOUT, title, "", task.reference)


def job_failed(task: TaskDefinition, info: JobInfo) -> Problem:
    detail = "; ".join(info.failure_messages) or f"job {info.job_id} ended {info.state}"
    if info.state == JobState.CANCELLED:
        title = f"the jobs system cancelled task {task.name}'s job {info.job_id} on its own"
    else:
        title = f"task {task.name} failed: job {info.job_id} failed"
    return Problem.of(ErrorType.RUNTIME, title, detail, task.reference)


def with_note(problem: Problem, note: str) -> Problem:
    """The problem with one more thing said (what became of the task's job)."""
    detail = f"{problem.detail}; {note}" if problem.detail else note
    return Problem(problem.type, problem.status, problem.title, detail, problem.instance)
