"""One trace per run, a span per task instance (docs/operations.md, "Traces").

A run's trace id is its id (a UUID is 128 bits, as a trace id is), and each span's id is
derived from the run and the instance's key: any process that executes the run, before or
after a restart, names the same spans, so a job submitted before a crash and the data plane's
span of it stay under the task's span. A span is described when its end is known, with the
start recorded when it began (`Started`, or the stored instance of a resumed run), so nothing
is held open across a restart; the sink builds and exports it off the event loop. While a call
runs, the task's span is `spans.CURRENT`: the jobs client's spans, and the `traceparent` it
sends, hang under it.

With no sink (tracing off, the default) every method returns at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from workflowd.domain.run import Problem, Run, RunEvent, RunEventType, TaskStatus
from workflowd.domain.spans import CURRENT, SpanRecord, SpanSink
from workflowd.engine.cursor import attempt
from workflowd.engine.flow import Ended, Record, Started

_ENDS = {
    RunEventType.RUN_COMPLETED: "completed",
    RunEventType.RUN_FAILED: "failed",
    RunEventType.RUN_CANCELLED: "cancelled",
}


class _Call(Protocol):
    @property
    def job_id(self) -> str: ...


def trace_id_of(run_id: str) -> int:
    try:
        return uuid.UUID(run_id).int or 1
    except ValueError:
        return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:16], "big") or 1


def span_id_of(run_id: str, key: str) -> int:
    """The span of the run itself (`key` "") or of one of its task instances."""
    digest = hashlib.sha256(f"{run_id}\n{key}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") or 1


class Tracing:
    def __init__(self, sink: SpanSink | None = None) -> None:
        self.sink = sink

    def run(self, run: Run) -> RunTrace:
        return RunTrace(self.sink, run)


class RunTrace:
    """The spans of one run, as its executor sees its records and events."""

    def __init__(self, sink: SpanSink | None, run: Run) -> None:
        self._sink = sink
        self._run = run
        self._trace_id = trace_id_of(run.id)
        self._started_at = run.started_at
        self._begun: dict[str, tuple[datetime, str, int]] = {
            t.key: (t.started_at, t.parent, t.attempt) for t in run.tasks if t.started_at
        }

    @contextlib.contextmanager
    def task(self, key: str) -> Iterator[None]:
        """The instance's span is the current one inside (its calls to the jobs system)."""
        if self._sink is None:
            yield
            return
        token = CURRENT.set((self._trace_id, span_id_of(self._run.id, key)))
        try:
            yield
        finally:
            CURRENT.reset(token)

    def records(self, found: Sequence[Record], calls: Mapping[str, _Call]) -> None:
        if self._sink is None:
            return
        for record in found:
            if isinstance(record, Started):
                self._begun[record.key] = (record.at, record.parent, attempt(record.path))
            elif isinstance(record, Ended):
                state = calls.get(record.key)
                self._task_span(record, state.job_id if state is not None else "")

    def start(self, at: datetime) -> None:
        """The run starts at `at` (its stored `started_at`), whenever its change commits."""
        self._started_at = at

    def events(self, events: Sequence[RunEvent]) -> None:
        if self._sink is None:
            return
        for event in events:
            if event.type in _ENDS:
                self._run_span(event)

    def _task_span(self, record: Ended, job_id: str) -> None:
        began, parent, tries = self._begun.pop(record.key, (record.at, "", 1))
        task = record.task
        attributes: dict[str, str | int | bool] = {
            "workflowd.task.reference": task.reference,
            "workflowd.task.key": record.key,
            "workflowd.task.attempt": tries,
        }
        if task.call:
            attributes["workflowd.task.call"] = task.call
        if job_id:
            attributes["workflowd.job.id"] = job_id
        if record.status != TaskStatus.COMPLETED:
            attributes["workflowd.task.status"] = record.status.value
        failed = record.problem if record.status == TaskStatus.FAILED else None
        self._span(
            f"task {task.reference}", record.key, parent, (began, record.at), attributes, failed
        )

    def _run_span(self, event: RunEvent) -> None:
        run = self._run
        attributes: dict[str, str | int | bool] = {
            "workflowd.run.id": run.id,
            "workflowd.run.status": _ENDS[event.type],
            "workflowd.run.trigger": run.trigger.value,
            "workflowd.workflow.id": run.workflow_id,
            "workflowd.workflow.namespace": run.namespace,
            "workflowd.workflow.name": run.name,
            "workflowd.workflow.version": run.version,
            "workflowd.company": run.company,
        }
        if run.scheduled_at is not None:
            attributes["workflowd.run.scheduled_at"] = run.scheduled_at.isoformat()
        began = self._started_at or run.created_at
        name = f"run {run.namespace}/{run.name}"
        self._span(name, "", None, (began, event.time), attributes, event.error)

    def _span(
        self,
        name: str,
        key: str,
        parent: str | None,
        times: tuple[datetime, datetime],
        attributes: Mapping[str, str | int | bool],
        problem: Problem | None,
    ) -> None:
        assert self._sink is not None
        run_id = self._run.id
        self._sink.record(
            SpanRecord(
                name=name,
                trace_id=self._trace_id,
                span_id=span_id_of(run_id, key),
                parent_id=None if parent is None else span_id_of(run_id, parent),
                start_ns=_ns(times[0]),
                end_ns=_ns(max(times)),
                attributes=attributes,
                error="" if problem is None else problem.title,
            )
        )


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)
