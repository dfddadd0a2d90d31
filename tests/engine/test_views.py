"""The web page's read models that need no daemon: a run's timeline as a tree on one time
axis, and the spec lines of a task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workflowd.domain.run import Run, RunStatus, RunTrigger, TaskRun, TaskStatus
from workflowd.engine.views import failing_reference, spec_lines, timeline

T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


def task(key: str, order: int, start_s: float, end_s: float | None, **fields: object) -> TaskRun:
    values: dict[str, object] = {
        "key": key,
        "order": order,
        "name": key.rsplit("/", 1)[-1].split("@")[0],
        "kind": "call",
        "call": "",
        "reference": key.split("@")[0],
        "started_at": T0 + timedelta(seconds=start_s),
        "ended_at": None if end_s is None else T0 + timedelta(seconds=end_s),
        "status": TaskStatus.COMPLETED if end_s is not None else TaskStatus.RUNNING,
    }
    values.update(fields)
    return TaskRun(**values)  # type: ignore[arg-type]


def run_of(*tasks: TaskRun, ended_s: float | None = None) -> Run:
    return Run(
        id="r",
        company="c",
        workflow_id="w",
        namespace="n",
        name="x",
        version="1",
        status=RunStatus.RUNNING if ended_s is None else RunStatus.COMPLETED,
        trigger=RunTrigger.MANUAL,
        input={},
        created_at=T0,
        started_at=T0,
        ended_at=None if ended_s is None else T0 + timedelta(seconds=ended_s),
        tasks=tasks,
    )


def test_instances_nest_under_their_parents_in_start_order() -> None:
    loop = task("/do/0/each", 1, 0, 6)
    second = task("/do/0/each/do/0/build@i1", 3, 3, 6, parent="/do/0/each", iteration=(1,))
    first = task("/do/0/each/do/0/build@i0", 2, 0, 3, parent="/do/0/each", iteration=(0,))
    after = task("/do/1/publish", 4, 6, 10)
    found = timeline(run_of(after, second, loop, first, ended_s=10), T0)
    assert [(b.task.key, b.depth) for b in found.bars] == [
        ("/do/0/each", 0),
        ("/do/0/each/do/0/build@i0", 1),
        ("/do/0/each/do/0/build@i1", 1),
        ("/do/1/publish", 0),
    ]
    assert [(b.start, b.width) for b in found.bars] == [
        (0.0, 0.6),
        (0.0, 0.3),
        (0.3, 0.3),
        (0.6, 0.4),
    ]


def test_a_running_run_ends_now_and_a_waiting_instance_says_so() -> None:
    waiting = task("/do/0/pause", 1, 1, None, wake_at=T0 + timedelta(hours=1), kind="wait")
    found = timeline(run_of(waiting), T0 + timedelta(seconds=5))
    bar = found.bars[0]
    assert found.ended == T0 + timedelta(seconds=5)
    assert bar.waiting
    assert (bar.start, bar.width) == (0.2, 0.8)


def test_the_failing_task_is_where_the_error_happened() -> None:
    inner = task("/do/0/guarded/try/0/load", 2, 0, 1, status=TaskStatus.FAILED)
    outer = task("/do/0/guarded", 1, 0, 1, status=TaskStatus.FAILED)
    assert failing_reference(run_of(inner, outer)) == "/do/0/guarded/try/0/load"
    assert failing_reference(run_of(task("/do/0/a", 1, 0, 1))) == ""


SPEC = """\
document: {dsl: '1.0.0', namespace: n, name: x, version: '1'}
do:
  - first: {set: {a: 1}}
  - guarded:
      try:
        - load:
            call: CreateMaterializedViewIfNotExists
            with: {nql: SELECT 1, datasetName: v}

      catch:
        retry: {limit: {attempt: {count: 2}}}
  - last: {set: {b: 2}}
"""


def lines_of(reference: str) -> tuple[int, int]:
    found = spec_lines(SPEC, reference)
    assert found.lines == tuple(SPEC.splitlines())
    return found.first, found.last


def test_a_tasks_lines_run_from_its_key_to_what_follows_it() -> None:
    assert lines_of("/do/1/guarded/try/0/load") == (6, 8)  # the blank line after it left out
    assert lines_of("/do/1/guarded") == (4, 11)
    assert lines_of("/do/2/last") == (12, 12)
    assert lines_of("/do/9/nothing") == (0, 0)
    assert lines_of("") == (0, 0)
