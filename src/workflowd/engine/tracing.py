"""One trace per run, a span per task instance (docs/operations.md, "Traces").

A run's trace id is its id (a UUID is 128 bits, as a trace id is), and each span's id is
derived from the run and the instance's key: any process that executes the run, before or
after a restart, names the same spans, so a job submitted before a crash and the data plane's
span of it stay under the task's span. A span is made when its end is known, with the start
recorded when it began (`Started`, or the stored instance of a resumed run), so nothing is held
open across a restart. While a call runs, the task's span is the current context: the jobs
client's spans, and the `traceparent` it sends, hang under it.

With no tracer (tracing off, the default) every method returns at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)

from workflowd.domain.run import Problem, Run, RunEvent, RunEventType, TaskStatus
from workflowd.engine.cursor import attempt
from workflowd.engine.flow import Ended, Record, Started

_WANTED: ContextVar[tuple[int, int] | None] = ContextVar("workflowd_span_ids", default=None)
_ENDS = {
    RunEventType.RUN_COMPLETED: "completed",
    RunEventType.RUN_FAILED: "failed",
    RunEventType.RUN_CANCELLED: "cancelled",
}


class _Call(Protocol):
    @property
    def job_id(self) -> str: ...


def wanted_ids() -> tuple[int, int] | None:
    """(trace id, span id) the span being started must have, if the engine chose them (read
    by the tracer provider's id generator, `workflowd.telemetry.RunIds`)."""
    return _WANTED.get()


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
    def __init__(self, tracer: Tracer | None = None) -> None:
        self.tracer = tracer

    def run(self, run: Run) -> RunTrace:
        return RunTrace(self.tracer, run)


class RunTrace:
    """The spans of one run, as its executor sees its records and events."""

    def __init__(self, tracer: Tracer | None, run: Run) -> None:
        self._tracer = tracer
        self._run = run
        self._trace_id = trace_id_of(run.id)
        self._started_at = run.started_at
        self._begun: dict[str, tuple[datetime, str, int]] = {
            t.key: (t.started_at, t.parent, t.attempt) for t in run.tasks if t.started_at
        }

    @contextlib.contextmanager
    def task(self, key: str) -> Iterator[None]:
        """The instance's span is the current one inside (its calls to the jobs system)."""
        if self._tracer is None:
            yield
            return
        token = otel_context.attach(trace.set_span_in_context(self._remote(key)))
        try:
            yield
        finally:
            otel_context.detach(token)

    def records(self, found: Sequence[Record], calls: Mapping[str, _Call]) -> None:
        if self._tracer is None:
            return
        for record in found:
            if isinstance(record, Started):
                self._begun[record.key] = (record.at, record.parent, attempt(record.path))
            elif isinstance(record, Ended):
                state = calls.get(record.key)
                self._task_span(record, state.job_id if state is not None else "")

    def events(self, events: Sequence[RunEvent]) -> None:
        if self._tracer is None:
            return
        for event in events:
            if event.type == RunEventType.RUN_STARTED:
                self._started_at = event.time
            elif event.type in _ENDS:
                self._run_span(event)

    def _task_span(self, record: Ended, job_id: str) -> None:
        began, parent, tries = self._begun.pop(record.key, (record.at, "", 1))
        task = record.task
        attributes: dict[str, str | int] = {
            "workflowd.run.id": self._run.id,
            "workflowd.task.reference": task.reference,
            "workflowd.task.key": record.key,
            "workflowd.task.name": task.name,
            "workflowd.task.kind": task.kind.value,
            "workflowd.task.attempt": tries,
            "workflowd.task.status": record.status.value,
        }
        if task.call:
            attributes["workflowd.task.call"] = task.call
        if job_id:
            attributes["workflowd.job.id"] = job_id
        failed = record.problem if record.status == TaskStatus.FAILED else None
        self._emit(
            f"task {task.reference}", record.key, parent, (began, record.at), attributes, failed
        )

    def _run_span(self, event: RunEvent) -> None:
        run = self._run
        attributes: dict[str, str | int] = {
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
        self._emit(name, "", None, (began, event.time), attributes, event.error)

    def _emit(
        self,
        name: str,
        key: str,
        parent: str | None,
        times: tuple[datetime, datetime],
        attributes: Mapping[str, str | int],
        problem: Problem | None,
    ) -> None:
        assert self._tracer is not None
        above = otel_context.Context()  # the run's span is a root, whatever is current
        if parent is not None:
            above = trace.set_span_in_context(self._remote(parent), above)
        ids = _WANTED.set((self._trace_id, span_id_of(self._run.id, key)))
        try:
            span = self._tracer.start_span(
                name, above, SpanKind.INTERNAL, attributes, start_time=_ns(times[0])
            )
        finally:
            _WANTED.reset(ids)
        if problem is not None:
            span.set_status(Status(StatusCode.ERROR, problem.title))
        span.end(end_time=_ns(max(times)))

    def _remote(self, key: str) -> NonRecordingSpan:
        span_id = span_id_of(self._run.id, key)
        sampled = TraceFlags(TraceFlags.SAMPLED)
        return NonRecordingSpan(SpanContext(self._trace_id, span_id, False, sampled))


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)
