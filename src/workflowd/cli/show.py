"""How runs read for people: statuses, instants, durations, task tables and problems in full."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from workflowd.api.client import to_dict
from workflowd.cli.common import print_table, visible
from workflowd.v1 import workflow_service_pb2 as pb


def status(value: pb.RunStatus.ValueType) -> str:
    return pb.RunStatus.Name(value).removeprefix("RUN_STATUS_").lower()


def task_status(value: pb.TaskStatus.ValueType) -> str:
    return pb.TaskStatus.Name(value).removeprefix("TASK_STATUS_").lower()


def when(stamp: Timestamp, present: bool) -> datetime | None:
    """A timestamp field as a UTC datetime; None when unset (the epoch would mislead)."""
    return stamp.ToDatetime(tzinfo=UTC) if present else None


def duration(start: datetime | None, end: datetime | None) -> str:
    """`0.04s`, `12.3s`, `4m05s`, `2h03m`: from `start` to `end`, or to now while running."""
    if start is None:
        return "-"
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def instant(moment: datetime | None, day: date | None = None) -> str:
    """UTC to the millisecond; the date is left out when it is `day` (shown once above)."""
    if moment is None:
        return "-"
    clock = moment.strftime("%H:%M:%S.%f")[:-3]
    return clock if moment.date() == day else f"{moment.strftime('%Y-%m-%d')} {clock}"


def compact(value: Any) -> str:
    """A JSON value on one line; its strings may hold anything (C1 controls stay raw in JSON
    without `ensure_ascii`), so the line is made visible too."""
    return visible(json.dumps(value, sort_keys=True, ensure_ascii=False))


def show_run(run: pb.Run) -> None:
    """Everything `runs get` knows: times, input and output, each task instance (nested under
    its loop, branch or try), the error in full."""
    data = to_dict(run)  # Values with integral numbers as ints
    day = _run_header(run, data)
    print()
    _task_table(run, day)
    for task, task_data in zip(run.tasks, data.get("tasks", []), strict=True):
        if "output" in task_data:
            print(f"output of {label(task)}: {compact(task_data['output'])}")
        if task.HasField("error") and task.error != run.error:
            show_problem(f"error of {label(task)}", task.error)
    show_problem("error", run.error if run.HasField("error") else None)


def label(task: pb.TaskRun | pb.RunEvent) -> str:
    """A task instance for people: its name, the loop iterations it runs in, its attempt."""
    if isinstance(task, pb.TaskRun):
        name, iteration, attempt = task.name, list(task.iteration), task.attempt
    else:
        name, iteration, attempt = task.task_name, list(task.iteration), task.attempt
    where = "".join(f"[{i}]" for i in iteration)
    again = f" (attempt {attempt})" if attempt > 1 else ""
    return visible(f"{name}{where}{again}")


def depths(tasks: list[pb.TaskRun]) -> dict[str, int]:
    """How deep each instance is nested (0 at the top), from the parents' keys."""
    found: dict[str, int] = {}
    for task in tasks:
        found[task.key] = found.get(task.parent, -1) + 1 if task.parent else 0
    return found


def task_state(task: pb.TaskRun, day: date | None) -> str:
    """A running instance that waits says until when."""
    if task.status == pb.TASK_STATUS_RUNNING and task.HasField("wake_at"):
        return f"waiting until {instant(task.wake_at.ToDatetime(tzinfo=UTC), day)}"
    if task.reused:
        return f"{task_status(task.status)} (reused)"
    return task_status(task.status)


def _run_header(run: pb.Run, data: dict[str, Any]) -> date | None:
    """The run's identity, times, input and output; returns the day it was created on, which
    later instants leave out."""
    created = when(run.created_at, run.HasField("created_at"))
    day = created.date() if created else None
    trigger = pb.RunTrigger.Name(run.trigger).removeprefix("RUN_TRIGGER_").lower()
    name = visible(f"{run.namespace}/{run.name} version {run.version}")
    print(f"run {visible(run.id)}  {name}  {status(run.status)}")
    print(f"created   {instant(created)} UTC ({trigger})")
    started = when(run.started_at, run.HasField("started_at"))
    ended = when(run.ended_at, run.HasField("ended_at"))
    if started is not None:
        print(f"started   {instant(started, day)}")
    if ended is not None:
        print(f"ended     {instant(ended, day)} (took {duration(started or created, ended)})")
    for key in ("input", "output"):
        if key in data:
            print(f"{key:9} {compact(data[key])}")
    return day


def _task_table(run: pb.Run, day: date | None) -> None:
    rows = []
    nesting = depths(list(run.tasks))
    for t in run.tasks:
        started = when(t.started_at, t.HasField("started_at"))
        ended = when(t.ended_at, t.HasField("ended_at"))
        rows.append(
            [
                "  " * nesting[t.key] + label(t),
                task_state(t, day),
                t.job_id or "-",
                instant(started, day),
                instant(ended, day),
                duration(started, ended),
            ]
        )
    print_table(["TASK", "STATUS", "JOB", "STARTED", "ENDED", "DURATION"], rows)


def show_summary(run: pb.Run) -> None:
    """The last lines of a watch: the outcome, and why it failed."""
    print(f"run {visible(run.id)} {status(run.status)}")
    show_problem("error", run.error if run.HasField("error") else None)


def show_problem(label: str, problem: pb.Problem | None) -> None:
    """An RFC 7807 problem with every field, multi-line details indented under their label."""
    if problem is None or not (problem.title or problem.type or problem.detail):
        return
    print(f"{label}:")
    fields = [
        ("type", problem.type),
        ("status", str(problem.status) if problem.status else ""),
        ("title", problem.title),
        ("detail", problem.detail),
        ("instance", problem.instance),
    ]
    for name, value in fields:
        if value:
            # Only the detail is laid out on several lines (a jobs system's messages).
            shown = visible(value, multiline=name == "detail")
            print(f"  {name:10}" + shown.replace("\n", "\n" + " " * 12))
