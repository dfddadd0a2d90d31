"""Domain values ⇄ protobuf messages. The only place that knows both."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from workflowd.domain.diagnostics import Diagnostic, Severity
from workflowd.domain.errors import InvalidRequest
from workflowd.domain.json import Json, JsonObject
from workflowd.domain.notify import Delivery, DeliveryStatus
from workflowd.domain.retention import RetentionPolicy, RetentionSource, RetentionView
from workflowd.domain.run import (
    Problem,
    Run,
    RunEvent,
    RunEventType,
    RunStatus,
    RunTrigger,
    TaskRun,
    TaskStatus,
)
from workflowd.domain.schedule import (
    CatchupPolicy,
    FireDecision,
    FireOutcome,
    OverlapPolicy,
    RerunPolicy,
)
from workflowd.domain.workflow import Workflow, WorkflowStatus
from workflowd.engine.schedules import ScheduleView
from workflowd.v1 import workflow_service_pb2 as pb

_WORKFLOW_STATUS = {
    WorkflowStatus.ACTIVE: pb.WORKFLOW_STATUS_ACTIVE,
    WorkflowStatus.ARCHIVED: pb.WORKFLOW_STATUS_ARCHIVED,
}
_WORKFLOW_STATUS_BACK = {v: k for k, v in _WORKFLOW_STATUS.items()}
_SEVERITY = {Severity.ERROR: pb.SEVERITY_ERROR, Severity.WARNING: pb.SEVERITY_WARNING}
RUN_STATUS = {s: pb.RunStatus.Value(f"RUN_STATUS_{s.name}") for s in RunStatus}
RUN_STATUS_BACK = {v: k for k, v in RUN_STATUS.items()}
TASK_STATUS = {s: pb.TaskStatus.Value(f"TASK_STATUS_{s.name}") for s in TaskStatus}
_EVENT_TYPE = {t: pb.RunEventType.Value(f"RUN_EVENT_TYPE_{t.name}") for t in RunEventType}
_TRIGGER = {t: pb.RunTrigger.Value(f"RUN_TRIGGER_{t.name}") for t in RunTrigger}
_OVERLAP = {p: pb.OverlapPolicy.Value(f"OVERLAP_POLICY_{p.name}") for p in OverlapPolicy}
_OVERLAP_BACK = {v: k for k, v in _OVERLAP.items()}
_CATCHUP = {p: pb.CatchupPolicy.Value(f"CATCHUP_POLICY_{p.name}") for p in CatchupPolicy}
_CATCHUP_BACK = {v: k for k, v in _CATCHUP.items()}
_OUTCOME = {o: pb.FireOutcome.Value(f"FIRE_OUTCOME_{o.name}") for o in FireOutcome}
_RERUN = {pb.RerunPolicy.Value(f"RERUN_POLICY_{p.name}"): p for p in RerunPolicy}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rerun_policy(value: pb.RerunPolicy.ValueType) -> RerunPolicy:
    """A backfill's re-run policy; unspecified is NONE."""
    if value == pb.RERUN_POLICY_UNSPECIFIED:
        return RerunPolicy.NONE
    if value not in _RERUN:
        raise InvalidRequest("rerun", f"{value} is not a RerunPolicy")
    return _RERUN[value]


_DELIVERY = {s: pb.DeliveryStatus.Value(f"DELIVERY_STATUS_{s.name}") for s in DeliveryStatus}
_DELIVERY_BACK = {v: k for k, v in _DELIVERY.items()}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    return None if value is None else instant(value)


def instant(value: datetime) -> timestamp_pb2.Timestamp:
    # What `Timestamp.FromDatetime` computes (a naive time is UTC), at a third of its cost:
    # every event streamed to every watcher carries one.
    since = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000
    )


def from_timestamp(message: timestamp_pb2.Timestamp, present: bool, field: str) -> datetime | None:
    if not present:
        return None
    try:
        return message.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(field, f"is not a valid timestamp: {exc}") from exc


def value(data: Json) -> struct_pb2.Value:
    # ParseDict takes any JSON value for a Value message; its stub says dict only.
    return json_format.ParseDict(cast(Any, data), struct_pb2.Value())


def struct(data: JsonObject) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


def required_timestamp(message: timestamp_pb2.Timestamp, present: bool, field: str) -> datetime:
    value = from_timestamp(message, present, field)
    if value is None:
        raise InvalidRequest(field, "is required")
    return value


def duration(seconds: float | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def from_duration(message: duration_pb2.Duration, present: bool, field: str) -> float | None:
    if not present:
        return None
    if not (0 <= message.nanos < 10**9 or -(10**9) < message.nanos <= 0):
        raise InvalidRequest(field, "is not a valid duration: nanos out of range")
    return message.seconds + message.nanos / 1e9


def overlap_from(value: pb.OverlapPolicy.ValueType, field: str) -> OverlapPolicy | None:
    if value == pb.OVERLAP_POLICY_UNSPECIFIED:
        return None
    if value not in _OVERLAP_BACK:
        raise InvalidRequest(field, f"unknown overlap policy {value}")
    return _OVERLAP_BACK[value]


def catchup_from(value: pb.CatchupPolicy.ValueType, field: str) -> CatchupPolicy | None:
    if value == pb.CATCHUP_POLICY_UNSPECIFIED:
        return None
    if value not in _CATCHUP_BACK:
        raise InvalidRequest(field, f"unknown catch-up policy {value}")
    return _CATCHUP_BACK[value]


def fire_decision(d: FireDecision) -> pb.FireDecision:
    return pb.FireDecision(
        fire_time=timestamp(d.instant),
        outcome=_OUTCOME[d.outcome],
        run_id=d.run_id,
        reason=text(d.reason),
        decided_at=timestamp(d.decided_at),
    )


def schedule(view: ScheduleView) -> pb.Schedule:
    s = view.schedule
    return pb.Schedule(
        workflow_id=s.workflow_id,
        namespace=s.namespace,
        name=s.name,
        version=s.version,
        cron=s.spec.cron,
        timezone=s.spec.timezone,
        every=duration(s.spec.every_s),
        active=s.active,
        overlap_policy=_OVERLAP[s.policies.overlap],
        catchup_policy=_CATCHUP[s.policies.catchup],
        catchup_window=duration(s.policies.catchup_window_s),
        anchor=timestamp(s.anchor),
        next_fire_at=timestamp(s.next_fire_at),
        last_fire_at=timestamp(s.last_fire_at),
        next_fire_times=[instant(t) for t in view.upcoming],
        recent_decisions=[fire_decision(d) for d in s.decisions],
        overdue=duration(view.overdue_s),
        input=value(s.input),
        created_at=timestamp(s.created_at),
        updated_at=timestamp(s.updated_at),
    )


def from_value(message: struct_pb2.Value, present: bool, field: str) -> Json:
    """JSON from a Value. Protobuf keeps every number as a double; integral ones come back as
    ints so that `10` stays `10` in NQL built from it."""
    if not present:
        return None
    try:
        return _integral(json_format.MessageToDict(message))
    except ValueError as exc:  # NaN and ±Infinity have no JSON form
        raise InvalidRequest(field, f"is not valid JSON: {exc}") from exc


def _integral(data: Json) -> Json:
    if isinstance(data, float) and data.is_integer() and abs(data) < 2**53:
        return int(data)
    if isinstance(data, list):
        return [_integral(item) for item in data]
    if isinstance(data, dict):
        return {key: _integral(item) for key, item in data.items()}
    return data


def workflow_status_from(message: pb.WorkflowStatus.ValueType) -> WorkflowStatus | None:
    return _WORKFLOW_STATUS_BACK.get(message)


def workflow(w: Workflow) -> pb.Workflow:
    return pb.Workflow(
        id=w.id,
        namespace=w.namespace,
        name=w.name,
        version=w.version,
        current_version=w.current_version,
        versions=list(w.versions),
        specification=w.specification,
        tags=list(w.tags),
        status=_WORKFLOW_STATUS[w.status],
        created_at=timestamp(w.created_at),
        updated_at=timestamp(w.updated_at),
        archived_at=timestamp(w.archived_at),
    )


def text(value: str) -> str:
    """A string protobuf can carry: messages may quote a user's text, which can hold lone
    surrogates (YAML and JSON escapes allow them; UTF-8 does not)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def diagnostic(d: Diagnostic) -> pb.Diagnostic:
    return pb.Diagnostic(
        message=text(d.message),
        pointer=text(d.pointer),
        line=d.line,
        column=d.column,
        severity=_SEVERITY[d.severity],
    )


def problem(p: Problem | None) -> pb.Problem | None:
    if p is None:
        return None
    return pb.Problem(
        type=p.type,
        status=p.status,
        title=text(p.title),
        detail=text(p.detail),
        instance=text(p.instance),
    )


def task_run(t: TaskRun) -> pb.TaskRun:
    return pb.TaskRun(
        name=text(t.name),
        call=t.call,
        reference=text(t.reference),
        status=TASK_STATUS[t.status],
        job_id=t.job_id,
        input=value(t.input) if t.input is not None else None,
        output=value(t.output) if t.output is not None else None,
        error=problem(t.error),
        started_at=timestamp(t.started_at),
        ended_at=timestamp(t.ended_at),
        key=text(t.key),
        kind=t.kind,
        iteration=t.iteration,
        attempt=t.attempt,
        parent=text(t.parent),
        reason=text(t.reason),
        reused=t.reused,
        wake_at=timestamp(t.wake_at),
        order=t.order,
        position=t.position,
    )


def run(r: Run) -> pb.Run:
    return pb.Run(
        id=r.id,
        workflow_id=r.workflow_id,
        namespace=r.namespace,
        name=r.name,
        version=r.version,
        status=RUN_STATUS[r.status],
        trigger=_TRIGGER[r.trigger],
        input=value(r.input),
        context=struct(r.context),
        output=value(r.output) if r.output is not None else None,
        error=problem(r.error),
        tasks=[task_run(t) for t in r.tasks],
        created_at=timestamp(r.created_at),
        started_at=timestamp(r.started_at),
        ended_at=timestamp(r.ended_at),
        scheduled_at=timestamp(r.scheduled_at),
        after_run_id=r.after_run_id,
        cancel_reason=text(r.cancel_reason),
        rerun_of=r.rerun_of,
    )


def backfill_run(r: Run, created: bool) -> pb.BackfillRun:
    return pb.BackfillRun(
        run_id=r.id,
        scheduled_at=timestamp(r.scheduled_at),
        status=RUN_STATUS[r.status],
        created=created,
    )


def run_event(e: RunEvent) -> pb.RunEvent:
    return pb.RunEvent(
        run_id=e.run_id,
        seq=e.seq,
        global_seq=e.global_seq,
        type=_EVENT_TYPE[e.type],
        time=timestamp(e.time),
        workflow_id=e.workflow_id,
        run_status=RUN_STATUS[e.run_status],
        task_index=e.task_index,
        task_name=text(e.task_name),
        task_status=(
            TASK_STATUS[e.task_status] if e.task_status is not None else pb.TASK_STATUS_UNSPECIFIED
        ),
        job_id=e.job_id,
        error=problem(e.error),
        reason=text(e.reason),
        task_key=text(e.task_key),
        task_reference=text(e.task_reference),
        iteration=e.iteration,
        attempt=e.attempt,
        until=timestamp(e.until),
    )


def delivery(d: Delivery) -> pb.Delivery:
    pending = d.status == DeliveryStatus.PENDING
    return pb.Delivery(
        delivery_id=d.delivery_id,
        destination=d.destination,
        event=d.event.value,
        workflow_id=d.workflow_id,
        namespace=d.namespace,
        name=d.name,
        run_id=d.run_id,
        status=_DELIVERY[d.status],
        attempts=d.attempts,
        created_at=timestamp(d.created_at),
        last_attempt_at=timestamp(d.last_attempt_at),
        next_attempt_at=timestamp(d.next_at if pending else None),
        ended_at=timestamp(d.ended_at),
        deadline=timestamp(d.deadline_at),
        last_error=text(d.last_error),
        last_http_status=d.last_http_status,
    )


def delivery_statuses(values: Sequence[pb.DeliveryStatus.ValueType]) -> tuple[DeliveryStatus, ...]:
    statuses = []
    for i, status in enumerate(values):
        if status not in _DELIVERY_BACK:
            raise InvalidRequest(f"statuses[{i}]", f"unknown delivery status {status}")
        statuses.append(_DELIVERY_BACK[status])
    return tuple(statuses)


_RETENTION_SOURCE = {
    RetentionSource.NONE: pb.RETENTION_SOURCE_NONE,
    RetentionSource.DEFAULT: pb.RETENTION_SOURCE_DEFAULT,
    RetentionSource.NAMESPACE: pb.RETENTION_SOURCE_NAMESPACE,
    RetentionSource.WORKFLOW: pb.RETENTION_SOURCE_WORKFLOW,
}


def retention_policy(policy: RetentionPolicy) -> pb.RetentionPolicy:
    return pb.RetentionPolicy(
        keep_for=duration(policy.keep_s),
        keep_last=policy.keep_last,
        keep_failed_for=duration(policy.keep_failed_s),
    )


def retention_policy_from(message: pb.RetentionPolicy, field: str) -> RetentionPolicy:
    return RetentionPolicy(
        keep_s=from_duration(message.keep_for, message.HasField("keep_for"), f"{field}.keep_for"),
        keep_last=message.keep_last,
        keep_failed_s=from_duration(
            message.keep_failed_for,
            message.HasField("keep_failed_for"),
            f"{field}.keep_failed_for",
        ),
    )


def retention_view(
    view: RetentionView,
) -> tuple[pb.RetentionPolicy | None, pb.RetentionPolicy, pb.RetentionSource.ValueType]:
    """The scope's own policy, the effective one, and where that comes from."""
    own = None if view.policy is None else retention_policy(view.policy)
    return own, retention_policy(view.effective), _RETENTION_SOURCE[view.source]
