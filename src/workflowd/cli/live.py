"""Following runs as they go: a task table redrawn in place on a terminal, one line per event
elsewhere, and streams that resume where they stopped when the daemon restarts."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from workflowd.api.client import ClientError
from workflowd.cli.common import CliError, visible
from workflowd.cli.show import depths, duration, instant, label, status, task_status, when
from workflowd.domain.units import plural
from workflowd.v1 import workflow_service_pb2 as pb

TICK_S = 1.0  # elapsed times on a terminal move on between events at this pace
RECONNECT_S = 1.0
_ACTIVE = (pb.TASK_STATUS_RUNNING, pb.TASK_STATUS_PENDING)


@dataclass
class _Row:
    label: str
    depth: int
    reference: str
    iteration: tuple[int, ...]
    status: pb.TaskStatus.ValueType
    job_id: str
    started: datetime | None
    ended: datetime | None
    waiting: datetime | None = None


class TaskTable:
    """The run's task instances (nested under their loop, branch or try) with status, job id
    and elapsed time, updated from events."""

    def __init__(self, run: pb.Run) -> None:
        self.run_id = run.id
        self.status = run.status
        nesting = depths(list(run.tasks))
        self.rows: dict[str, _Row] = {
            t.key: _Row(
                label(t),
                nesting[t.key],
                t.reference,
                tuple(t.iteration),
                t.status,
                visible(t.job_id),
                when(t.started_at, t.HasField("started_at")),
                when(t.ended_at, t.HasField("ended_at")),
                when(t.wake_at, t.HasField("wake_at")),
            )
            for t in run.tasks
        }

    def apply(self, event: pb.RunEvent) -> None:
        self.status = event.run_status
        if not event.task_key:
            return
        moment = event.time.ToDatetime(tzinfo=UTC)
        row = self.rows.get(event.task_key)
        if row is None:
            row = self.rows[event.task_key] = self._new_row(event, moment)
        row.status = event.task_status
        row.job_id = visible(event.job_id) or row.job_id
        if event.type in (pb.RUN_EVENT_TYPE_TASK_WAITING, pb.RUN_EVENT_TYPE_TASK_RETRYING):
            row.waiting = event.until.ToDatetime(tzinfo=UTC)
        elif event.task_status not in _ACTIVE:
            row.ended, row.waiting = moment, None

    def _new_row(self, event: pb.RunEvent, moment: datetime) -> _Row:
        """An instance that started: nested under the innermost row whose task holds it."""
        iteration = tuple(event.iteration)
        holders = [
            r
            for r in self.rows.values()
            if event.task_reference.startswith(r.reference + "/")
            and iteration[: len(r.iteration)] == r.iteration
        ]
        depth = max((r.depth + 1 for r in holders), default=0)
        return _Row(label(event), depth, event.task_reference, iteration, event.task_status,
                    event.job_id, moment, None)  # fmt: skip

    def lines(self, height: int) -> list[str]:
        """The table in at most `height` lines: a long run shows the tasks around its current
        one, since the cursor cannot move back above the top of the screen."""
        rows = list(self.rows.values())
        names = ["  " * r.depth + r.label for r in rows]
        width = max([4, *(len(n) for n in names)])
        lines = [
            f"  {name:{width}}  {_state(r):10}  {r.job_id or '-':36}  "
            f"{'' if r.started is None else duration(r.started, r.ended):>8}".rstrip()
            for name, r in zip(names, rows, strict=True)
        ]
        current = next((i for i, r in enumerate(rows) if r.status in _ACTIVE), len(lines))
        head = [
            f"run {visible(self.run_id)}  {status(self.status)}",
            f"  {'TASK':{width}}  {'STATUS':10}  {'JOB':36}  {'ELAPSED':>8}",
        ]
        return head + _window(lines, current, max(height - len(head) - 1, 3))


def _state(row: _Row) -> str:
    if row.status in _ACTIVE and row.waiting is not None:
        return f"waiting until {instant(row.waiting, row.waiting.date())}"
    return task_status(row.status)


def _window(rows: list[str], focus: int, room: int) -> list[str]:
    """At most `room` rows around `focus`, each side that is cut summarised in one line."""
    if len(rows) <= room:
        return rows
    shown = room - 2
    start = min(max(focus - 1, 0), len(rows) - shown)
    end = start + shown
    earlier, later = plural(start, "earlier task"), plural(len(rows) - end, "more task")
    return [f"  … {earlier}", *rows[start:end], f"  … {later}"]


class LiveTable:
    """A TaskTable drawn on a terminal: each drawing moves the cursor back up over the last one
    and erases it, so the table updates in place."""

    def __init__(self, table: TaskTable, out: TextIO) -> None:
        self.table = table
        self.out = out
        self._drawn = 0

    def redraw(self) -> None:
        size = shutil.get_terminal_size()
        # A line as wide as the terminal wraps on some terminals, and a wrapped line would
        # make the next cursor movement land one line short.
        lines = [line[: size.columns - 1] for line in self.table.lines(size.lines)]
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self.out.write(up + "\x1b[J" + "\n".join(lines) + "\n")
        self.out.flush()
        self._drawn = len(lines)


@contextlib.asynccontextmanager
async def ticking(redraw: Callable[[], None]) -> AsyncIterator[None]:
    """Calls `redraw` every TICK_S while the block runs, and never after it."""

    async def tick() -> None:
        while True:
            await asyncio.sleep(TICK_S)
            redraw()

    task = asyncio.create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def event_line(event: pb.RunEvent) -> str:
    """One event of a run being followed, with its time (UTC):
    `2026-01-31 06:00:01.250  #4 task_job_submitted build[2] job J (run running)`."""
    moment = instant(event.time.ToDatetime(tzinfo=UTC))
    task = f" {label(event)}" if event.task_name else ""
    job = f" job {event.job_id}" if event.job_id else ""
    until = ""
    if event.HasField("until"):
        until = f" until {instant(event.until.ToDatetime(tzinfo=UTC))}"
    return visible(
        f"{moment}  #{event.seq} {_kind(event)}{task}{job}{until} (run {status(event.run_status)})"
    )


def watch_line(event: pb.RunEvent, workflow: str) -> str:
    """One event among many runs: time (UTC), run, workflow, event, task, status, job."""
    moment = instant(event.time.ToDatetime(tzinfo=UTC))
    is_task = bool(event.task_key)
    state = task_status(event.task_status) if is_task else status(event.run_status)
    task = label(event) if is_task else "-"
    run_id, job_id = visible(event.run_id), visible(event.job_id) or "-"
    return (
        f"{moment}  {run_id}  {visible(workflow):24}  {_kind(event):18}  {task:20}  {state:10}  "
        f"{job_id}"
    ).rstrip()


def _kind(event: pb.RunEvent) -> str:
    return pb.RunEventType.Name(event.type).removeprefix("RUN_EVENT_TYPE_").lower()


Opener = Callable[[int, Callable[[], None]], AsyncIterator[pb.RunEvent]]


async def resuming(
    open_stream: Opener,
    position: Callable[[pb.RunEvent], int],
    on_subscribed: Callable[[], None] = lambda: None,
) -> AsyncIterator[pb.RunEvent]:
    """The events of `open_stream(after, subscribed)`. A draining daemon ends watches with
    UNAVAILABLE: once connected, the stream is reopened after the last event seen until the
    daemon is back. Before that, UNAVAILABLE means no daemon, which is reported."""
    after, connected = 0, False

    def subscribed() -> None:
        nonlocal connected
        connected = True
        on_subscribed()

    while True:
        try:
            async for event in open_stream(after, subscribed):
                connected = True
                after = position(event)
                yield event
        except ClientError as exc:
            if exc.code != "UNAVAILABLE" or not connected:
                raise CliError(exc.message) from exc
            await asyncio.sleep(RECONNECT_S)
            continue
        return
