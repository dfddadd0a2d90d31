"""Runs started before task instances existed: their tasks were the workflow's `do` list,
numbered by position, run one after another. A run in flight across the upgrade resumes from a
cursor rebuilt from its tasks: after its last completed task, or on the task whose job was under
way (its stored request keeps its old idempotency key, `run_id:index`, so no job is submitted
twice across the upgrade)."""

from __future__ import annotations

from workflowd.domain.definition import WorkflowDefinition
from workflowd.domain.json import Json
from workflowd.domain.run import Run, TaskStatus
from workflowd.engine.cursor import Cursor, ListFrame, Phase, RunPhase, TaskFrame
from workflowd.engine.dataflow import iso
from workflowd.engine.interpreter import CALL


def legacy_cursor(run: Run, definition: WorkflowDefinition) -> Cursor:
    tasks = sorted(run.tasks, key=lambda t: t.position)
    done = [t for t in tasks if t.status == TaskStatus.COMPLETED]
    data: Json = done[-1].output if done else run.input
    root = ListFrame(definition.do.reference, len(done), data, ())
    cursor = Cursor(
        phase=RunPhase.BODY,
        data=run.input,
        context=dict(run.context),
        root=root,
        order=max((t.order for t in tasks), default=0),
    )
    running = next((t for t in tasks if t.status == TaskStatus.RUNNING), None)
    if running is not None:
        root.index = running.position
        root.task = TaskFrame(
            key=running.key,
            reference=running.reference,
            path=(),
            order=running.order,
            phase=Phase.BODY,
            raw=data,
            started_at=iso(running.started_at) if running.started_at else "",
            input=running.input,
            pending=CALL,
        )
    return cursor
