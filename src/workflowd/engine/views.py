"""Read models of the web page: a company's workflows with their schedules and last runs, a
run's timeline of task instances, and the lines of the spec a failing task was written on.

Each is built from what the gRPC API reads too (`Definitions`, `Runs`, `Schedules`), for one
company: the page sees exactly what that company's token sees over gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from workflowd.domain.errors import NotFound
from workflowd.domain.run import Run, RunFilter, RunStatus, TaskRun, TaskStatus
from workflowd.domain.workflow import Workflow, WorkflowFilter
from workflowd.engine.definitions import Definitions, WorkflowRef
from workflowd.engine.runs import Runs
from workflowd.engine.schedules import Schedules, ScheduleView
from workflowd.spec.yamlload import load

RECENT_RUNS = 20
_SPEC_NODES = 1_000_000


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    workflow: Workflow
    schedule: ScheduleView | None
    recent: tuple[Run, ...]
    """Its last runs, newest first (without their task instances)."""
    last_success: Run | None


@dataclass(frozen=True, slots=True)
class WorkflowRows:
    rows: tuple[WorkflowRow, ...]
    next_token: str


@dataclass(frozen=True, slots=True)
class Bar:
    """One task instance on the timeline: where it sits in the tree (`depth`), and its span
    as fractions of the run's (0 to 1)."""

    task: TaskRun
    depth: int
    start: float
    width: float
    waiting: bool
    """A `wait` or a retry's backoff that has not woken yet."""


@dataclass(frozen=True, slots=True)
class Timeline:
    began: datetime
    ended: datetime
    bars: tuple[Bar, ...]


@dataclass(frozen=True, slots=True)
class SpecLines:
    """A spec's text as lines, and the 1-based range [first, last] to highlight (0, 0: none)."""

    lines: tuple[str, ...]
    first: int
    last: int


class Views:
    def __init__(self, definitions: Definitions, runs: Runs, schedules: Schedules) -> None:
        self._definitions = definitions
        self._runs = runs
        self._schedules = schedules

    async def workflows(self, company: str, size: int, token: str) -> WorkflowRows:
        page = await self._definitions.list(company, WorkflowFilter(), size, token)
        rows = [await self._row(company, workflow) for workflow in page.items]
        return WorkflowRows(tuple(rows), page.after[-1] if page.more and page.items else "")

    async def _row(self, company: str, workflow: Workflow) -> WorkflowRow:
        recent = await self._runs.list(
            company, RunFilter(workflow_id=workflow.id), RECENT_RUNS, "", tasks=False
        )
        success = next((r for r in recent.items if r.status == RunStatus.COMPLETED), None)
        if success is None and recent.more:
            found = await self._runs.list(
                company,
                RunFilter(workflow_id=workflow.id, statuses=(RunStatus.COMPLETED,)),
                1,
                "",
                tasks=False,
            )
            success = found.items[0] if found.items else None
        return WorkflowRow(
            workflow, await self.schedule(company, workflow.id), tuple(recent.items), success
        )

    async def schedule(self, company: str, workflow_id: str) -> ScheduleView | None:
        """The workflow's schedule with its recent decisions, None when it never had one."""
        try:
            return await self._schedules.get(company, workflow_id)
        except NotFound:
            return None

    async def workflow_choices(self, company: str, size: int) -> list[Workflow]:
        """The company's first `size` workflows, newest first (a filter's choices)."""
        return (await self._definitions.list(company, WorkflowFilter(), size, "")).items

    async def workflow(self, company: str, workflow_id: str, version: str = "") -> Workflow:
        return await self._definitions.get(
            company, WorkflowRef(workflow_id=workflow_id, version=version)
        )


def timeline(run: Run, now: datetime) -> Timeline:
    """The run's task instances in tree order (each under the loop, branch or try it runs
    in, in the order they started), with bars on one time axis from the run's start to its end
    (now while it runs)."""
    began = run.started_at or run.created_at
    starts = [t.started_at for t in run.tasks if t.started_at is not None]
    if starts:
        began = min(began, *starts)
    ended = run.ended_at or now
    ends = [t.ended_at for t in run.tasks if t.ended_at is not None]
    if ends:
        ended = max(ended, *ends)
    span = max((ended - began).total_seconds(), 1e-3)
    children: dict[str, list[TaskRun]] = {}
    for task in sorted(run.tasks, key=lambda t: t.order):
        children.setdefault(task.parent, []).append(task)
    known = {t.key for t in run.tasks}
    roots = [t for parent, tasks in children.items() if parent not in known for t in tasks]
    bars: list[Bar] = []
    stack = [(task, 0) for task in sorted(roots, key=lambda t: t.order, reverse=True)]
    while stack:
        task, depth = stack.pop()
        start = task.started_at or began
        end = task.ended_at or (ended if task.status == TaskStatus.RUNNING else start)
        offset = (start - began).total_seconds() / span
        width = max(0.0, (end - start).total_seconds() / span)
        waiting = task.status == TaskStatus.RUNNING and task.wake_at is not None
        bars.append(Bar(task, depth, offset, min(width, 1.0 - offset), waiting))
        stack.extend((child, depth + 1) for child in reversed(children.get(task.key, [])))
    return Timeline(began, ended, tuple(bars))


def failing_reference(run: Run) -> str:
    """The reference of the task where the run's failure happened: of the failed instances,
    the last to start (a failure goes up the tree, failing the instances it runs inside,
    which started before it); "" when none failed."""
    failed = [t for t in run.tasks if t.status == TaskStatus.FAILED]
    return max(failed, key=lambda t: t.order).reference if failed else ""


def spec_lines(text: str, reference: str) -> SpecLines:
    """`text` as lines, with the lines of the task at `reference` (a JSON pointer into the
    spec) to highlight: from its key to the line before whatever the spec writes next outside
    it."""
    lines = tuple(text.splitlines())
    if not reference:
        return SpecLines(lines, 0, 0)
    positions = load(text, _SPEC_NODES).positions
    found = positions.get(reference)
    if found is None:
        return SpecLines(lines, 0, 0)
    first = found[0]
    inside = reference + "/"
    after = [
        line
        for pointer, (line, _) in positions.items()
        if line > first and pointer != reference and not pointer.startswith(inside)
    ]
    last = min(after) - 1 if after else len(lines)
    while last > first and not lines[last - 1].strip():
        last -= 1
    return SpecLines(lines, first, last)
