"""A run's time limits: the workflow's `timeout.after` from the run's start covers everything
(expressions, commits, waiting between tasks), and a task's own from the task's start."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from workflowd.domain.definition import TaskDefinition, WorkflowDefinition
from workflowd.engine import problems
from workflowd.engine.problems import StepFailed


@dataclass(frozen=True, slots=True)
class WaitLimit:
    seconds: float | None
    """How long the task's job may still be waited for; None: no limit."""
    task_expires: bool
    """Whether the task's own timeout is the nearer one."""


@dataclass(frozen=True, slots=True)
class Deadlines:
    definition: WorkflowDefinition
    run_started: datetime

    def check_workflow(self, task: TaskDefinition, now: datetime) -> None:
        """Nothing more starts (no input is resolved, no job submitted) once the workflow's
        timeout has passed."""
        left = self._workflow_left(now)
        if left is not None and left <= 0:
            raise StepFailed(problems.timeout(task, self.definition, task_expired=False))

    def wait_limit(self, task: TaskDefinition, task_started: datetime, now: datetime) -> WaitLimit:
        workflow_left = self._workflow_left(now)
        task_left = (
            None
            if task.timeout_s is None
            else task.timeout_s - (now - task_started).total_seconds()
        )
        if task_left is not None and (workflow_left is None or task_left <= workflow_left):
            return WaitLimit(max(0.0, task_left), task_expires=True)
        if workflow_left is not None:
            return WaitLimit(max(0.0, workflow_left), task_expires=False)
        return WaitLimit(None, task_expires=False)

    def _workflow_left(self, now: datetime) -> float | None:
        if self.definition.timeout_s is None:
            return None
        return self.definition.timeout_s - (now - self.run_started).total_seconds()
