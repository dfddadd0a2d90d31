"""What a commit of the executor carries: the interpreter's records about task instances, the
calls' intents, the jobs still to cancel, the cursor and the run's end, turned into one change
of the run's transaction; and the log lines its events make."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from workflowd.domain.json import JsonObject
from workflowd.domain.run import NewInstance, RunEvent, RunEventType, RunStatus, TaskStatus
from workflowd.engine.calls import CallState
from workflowd.engine.cursor import attempt, iterations
from workflowd.engine.dataflow import stores_input, stores_output
from workflowd.engine.flow import (
    Caught,
    ContextChanged,
    Ended,
    InputResolved,
    Record,
    Retrying,
    RunEnd,
    Started,
    Waiting,
)
from workflowd.engine.ports import RunTransaction

log = logging.getLogger("workflowd.engine")

Change = Callable[[RunTransaction], None]


def change(
    found: Sequence[Record],
    intents: Sequence[CallState],
    calls: Mapping[str, CallState],
    cursor: JsonObject,
    end: RunEnd | None,
    now: datetime,
    started_at: datetime | None = None,
) -> Change:
    """One change of the run: its start (`started_at`, for the run's first change), `found` in
    order, then the intents (after the instances they belong to started), the jobs to cancel
    later, the cursor, and the end."""
    # Taken now: the states change after this returns, the change runs later on the writer.
    intent_requests = [(s.key, s.request.to_json()) for s in intents if s.request is not None]
    jobs = {key: s.job_id for key, s in calls.items() if s.job_id}
    reused = {key for key, s in calls.items() if s.reused}
    later = [(s.job_id, key) for key, s in calls.items() if s.unconfirmed and s.job_id]

    def apply(tx: RunTransaction) -> None:
        # A cancel asked before this first change has made the run CANCELLING: it never ran.
        if started_at is not None and tx.run_status == RunStatus.PENDING:
            tx.start_run(started_at)
        for record in found:
            _apply(tx, record, jobs, reused)
        for key, request in intent_requests:
            tx.record_intent(key, request)
        for job_id, key in later:
            tx.cancel_job_later(job_id, key)
        tx.set_cursor(None if end is not None else cursor)
        if end is not None and not tx.run_status.terminal:
            tx.end_run(end.status, now, output=end.output, problem=end.problem, reason=end.reason)

    return apply


def _apply(tx: RunTransaction, record: Record, jobs: Mapping[str, str], reused: set[str]) -> None:
    if isinstance(record, Started):
        task = record.task
        tx.start_instance(
            NewInstance(
                key=record.key,
                order=record.order,
                name=task.name,
                kind=task.kind.value,
                call=task.call if task.kind.value == "call" else "",
                reference=task.reference,
                position=task.position,
                iteration=iterations(record.path),
                attempt=attempt(record.path),
                parent=record.parent,
                started_at=record.at,
            )
        )
    elif isinstance(record, InputResolved):
        if stores_input(record.task):
            tx.set_input(record.key, record.input)
    elif isinstance(record, Ended):
        job_id = jobs.get(record.key, "")
        if job_id and record.key not in reused:
            tx.record_job(record.key, job_id)  # its TASK_JOB_SUBMITTED precedes its end
        tx.end_instance(
            record.key,
            record.status,
            record.at,
            output=record.output,
            store_output=record.status == TaskStatus.COMPLETED and stores_output(record.task),
            problem=record.problem,
            reason=record.reason,
            job_id=job_id,
            reused=record.key in reused,
        )
    elif isinstance(record, Waiting):
        tx.instance_waits(record.key, record.until)
    elif isinstance(record, Retrying):
        tx.instance_retries(record.key, record.attempt, record.until, record.problem)
    elif isinstance(record, Caught):
        tx.error_caught(record.key, record.problem)
    else:
        assert isinstance(record, ContextChanged)
        tx.set_context(record.context)


_LOGGED = frozenset(
    {
        RunEventType.TASK_COMPLETED,
        RunEventType.TASK_FAILED,
        RunEventType.TASK_CANCELLED,
        RunEventType.RUN_COMPLETED,
        RunEventType.RUN_FAILED,
        RunEventType.RUN_CANCELLED,
    }
)


def log_events(events: Sequence[RunEvent]) -> None:
    """One line per task end and per run end, with the run, task and job as fields."""
    for event in events:
        if event.type not in _LOGGED:
            continue
        fields = {
            "run_id": event.run_id,
            "task": event.task_name,
            "task_ref": event.task_key,
            "job_id": event.job_id,
        }
        what = event.type.value.replace("_", " ")
        if event.task_name:
            detail = f" (job {event.job_id})" if event.job_id else ""
            message = f"run {event.run_id}: task {event.task_key} {what.split()[-1]}{detail}"
        else:
            message = f"run {event.run_id} {what.split()[-1]}"
        if event.error is not None:
            message += f": {event.error.title}"
        elif event.reason:
            message += f": {event.reason}"
        log.info(message, extra=fields)
