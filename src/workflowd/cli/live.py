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
from workflowd.cli.show import duration, instant, status, task_status, when
from workflowd.v1 import workflow_service_pb2 as pb

TICK_S = 1.0  # elapsed times on a terminal move on between events at this pace
RECONNECT_S = 1.0
_ACTIVE = (pb.TASK_STATUS_RUNNING, pb.TASK_STATUS_PENDING)


@dataclass
class _Row:
    name: str
    status: pb.TaskStatus.ValueType
    job_id: str
    started: datetime | None
    ended: datetime | None


class TaskTable:
    """The run's tasks with status, job id and elapsed time, updated from events."""

    def __init__(self, run: pb.Run) -> None:
        self.run_id = run.id
        self.status = run.status
        self.rows = [
            _Row(
                visible(t.name),
                t.status,
                visible(t.job_id),
                when(t.started_at, t.HasField("started_at")),
                when(t.ended_at, t.HasField("ended_at")),
            )
            for t in run.tasks
        ]

    def apply(self, event: pb.RunEvent) -> None:
        self.status = event.run_status
        if event.task_index < 0 or event.task_index >= len(self.rows):
            return
        row = self.rows[event.task_index]
        row.status = event.task_status
        row.job_id = visible(event.job_id) or row.job_id
        moment = event.time.ToDatetime(tzinfo=UTC)
        if event.type == pb.RUN_EVENT_TYPE_TASK_STARTED:
            row.started = moment
        elif event.task_status not in _ACTIVE:
            row.ended = moment

    def lines(self, height: int) -> list[str]:
        """The table in at most `height` lines: a long run shows the tasks around its current
        one, since the cursor cannot move back above the top of the screen."""
        width = max([4, *(len(r.name) for r in self.rows)])
        rows = [
            f"  {r.name:{width}}  {task_status(r.status):10}  {r.job_id or '-':36}  "
            f"{'' if r.started is None else duration(r.started, r.ended):>8}".rstrip()
            for r in self.rows
        ]
        current = next((i for i, r in enumerate(self.rows) if r.status in _ACTIVE), len(rows))
        head = [
            f"run {visible(self.run_id)}  {status(self.status)}",
            f"  {'TASK':{width}}  {'STATUS':10}  {'JOB':36}  {'ELAPSED':>8}",
        ]
        return head + _window(rows, current, max(height - len(head) - 1, 3))


def _window(rows: list[str], focus: int, room: int) -> list[str]:
    """At most `room` rows around `focus`, each side that is cut summarised in one line."""
    if len(rows) <= room:
        return rows
    shown = room - 2
    start = min(max(focus - 1, 0), len(rows) - shown)
    end = start + shown
    return [f"  … {start} earlier tasks", *rows[start:end], f"  … {len(rows) - end} more tasks"]


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
    """One event of a run being followed: `#4 task_job_submitted build job J (run running)`."""
    task = f" {event.task_name}" if event.task_name else ""
    job = f" job {event.job_id}" if event.job_id else ""
    return visible(f"#{event.seq} {_kind(event)}{task}{job} (run {status(event.run_status)})")


def watch_line(event: pb.RunEvent) -> str:
    """One event among many runs: time (UTC), run, event, task, status, job."""
    moment = instant(event.time.ToDatetime(tzinfo=UTC))
    is_task = event.task_index >= 0
    state = task_status(event.task_status) if is_task else status(event.run_status)
    task = visible(event.task_name) if is_task else "-"
    run_id, job_id = visible(event.run_id), visible(event.job_id) or "-"
    return f"{moment}  {run_id}  {_kind(event):18}  {task:20}  {state:10}  {job_id}".rstrip()


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
