"""Webhooks as values: which events the operator's destinations hear (`NotifyPolicy`), what one
notice says (`Notice`, its JSON payload and its Slack text), and what became of a delivery.

The policy is consulted inside the transaction that records an event, so the store can commit
one outbox row per destination together with the event (docs/operations.md, "Webhooks").
"""

from __future__ import annotations

import fnmatch
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from workflowd.domain.json import JsonObject
from workflowd.domain.run import Problem, RunEventType
from workflowd.domain.schedule import FireOutcome


class NotifyEvent(StrEnum):
    RUN_FAILED = "run_failed"
    RUN_COMPLETED = "run_completed"
    RUN_CANCELLED = "run_cancelled"
    TASK_RETRYING = "task_retrying"
    SCHEDULE_SKIPPED = "schedule_skipped"
    SCHEDULE_MISSED = "schedule_missed"


NOTIFY_FOR_RUN_EVENT: dict[RunEventType, NotifyEvent] = {
    RunEventType.RUN_FAILED: NotifyEvent.RUN_FAILED,
    RunEventType.RUN_COMPLETED: NotifyEvent.RUN_COMPLETED,
    RunEventType.RUN_CANCELLED: NotifyEvent.RUN_CANCELLED,
    RunEventType.TASK_RETRYING: NotifyEvent.TASK_RETRYING,
}
NOTIFY_FOR_DECISION: dict[FireOutcome, NotifyEvent] = {
    FireOutcome.SKIPPED: NotifyEvent.SCHEDULE_SKIPPED,
    FireOutcome.MISSED: NotifyEvent.SCHEDULE_MISSED,
}
_DELIVERY_IDS = uuid.UUID("5b0c1f3e-49a5-4f0e-9d6b-6e6f74696679")


class PayloadFormat(StrEnum):
    JSON = "json"
    SLACK = "slack"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    """Given up: its deadline passed, or its destination is no longer configured."""


@dataclass(frozen=True, slots=True)
class Destination:
    """Where notices of some events go; `workflows` are `namespace/name` globs, `company` is
    one company or `*` for every one."""

    name: str
    url: str
    secret: str
    events: frozenset[NotifyEvent]
    workflows: tuple[str, ...] = ("*",)
    company: str = "*"
    format: PayloadFormat = PayloadFormat.JSON
    timeout_s: float = 10.0

    def wants(self, event: NotifyEvent, company: str, namespace: str, name: str) -> bool:
        if event not in self.events or self.company not in ("*", company):
            return False
        workflow = f"{namespace}/{name}"
        return any(fnmatch.fnmatchcase(workflow, glob) for glob in self.workflows)


@dataclass(frozen=True, slots=True)
class NotifyPolicy:
    """Every destination, and the settings every delivery shares."""

    destinations: tuple[Destination, ...] = ()
    deadline_s: float = 86400.0
    """A delivery not accepted (2xx) this long after its event is given up."""
    page_base_url: str = ""
    """The runs' web pages: a notice links to `<page_base_url>/runs/<run id>`."""
    events: frozenset[NotifyEvent] = field(init=False)

    def __post_init__(self) -> None:
        wanted = frozenset(e for d in self.destinations for e in d.events)
        object.__setattr__(self, "events", wanted)

    def destination(self, name: str) -> Destination | None:
        return next((d for d in self.destinations if d.name == name), None)

    def matching(
        self, event: NotifyEvent, company: str, namespace: str, name: str
    ) -> list[Destination]:
        if event not in self.events:
            return []
        return [d for d in self.destinations if d.wants(event, company, namespace, name)]

    def link(self, run_id: str) -> str | None:
        if not self.page_base_url or not run_id:
            return None
        return f"{self.page_base_url.rstrip('/')}/runs/{run_id}"


@dataclass(frozen=True, slots=True)
class Notice:
    """What one event says to the destinations that hear it."""

    event: NotifyEvent
    time: datetime
    company: str
    workflow_id: str
    namespace: str
    name: str
    version: str
    run_id: str = ""
    status: str = ""
    """The run's status (a run's event), or the schedule's decision (a schedule's event)."""
    problem: Problem | None = None
    scheduled_at: datetime | None = None
    reason: str = ""
    task_reference: str = ""
    attempt: int = 0
    retry_at: datetime | None = None
    origin: str = ""
    """What makes the event unique (a run's event number, a schedule's instant): the delivery
    id is derived from it, so recording the same event again never makes a second delivery."""

    def delivery_id(self, destination: str) -> str:
        return str(uuid.uuid5(_DELIVERY_IDS, f"{destination}\n{self.event}\n{self.origin}"))

    def payload(self, delivery_id: str, link: str | None) -> JsonObject:
        body: JsonObject = {
            "event": self.event.value,
            "deliveryId": delivery_id,
            "time": _iso(self.time),
            "company": self.company,
            "workflow": {
                "id": self.workflow_id,
                "namespace": self.namespace,
                "name": self.name,
                "version": self.version,
            },
            "run": self.run_id or None,
            "status": self.status,
            "problem": None if self.problem is None else self.problem.to_json(),
            "scheduledAt": _iso(self.scheduled_at),
            "link": link,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.event == NotifyEvent.TASK_RETRYING:
            body["task"] = {
                "reference": self.task_reference,
                "attempt": self.attempt,
                "retryAt": _iso(self.retry_at),
            }
        return body


def slack_text(payload: JsonObject) -> JsonObject:
    """A Slack-compatible message (`{"text": …}`) saying what `payload` says."""
    workflow = payload.get("workflow")
    name = ""
    if isinstance(workflow, dict):
        name = f"{workflow.get('namespace')}/{workflow.get('name')}"
    event = str(payload.get("event", "")).replace("_", " ")
    lines = [f"workflowd: {name} {event}"]
    if payload.get("run"):
        lines[0] += f" (run {payload['run']})"
    problem = payload.get("problem")
    if isinstance(problem, dict) and problem.get("title"):
        where = f" at {problem['instance']}" if problem.get("instance") else ""
        lines.append(f"{problem['title']}{where}")
    if payload.get("reason"):
        lines.append(str(payload["reason"]))
    if payload.get("link"):
        lines.append(str(payload["link"]))
    return {"text": "\n".join(lines)}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notice to one destination, as the outbox holds it."""

    delivery_id: str
    company: str
    destination: str
    event: NotifyEvent
    workflow_id: str
    namespace: str
    name: str
    run_id: str
    payload: JsonObject
    created_at: datetime
    deadline_at: datetime
    status: DeliveryStatus
    attempts: int = 0
    next_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_error: str = ""
    last_http_status: int = 0
    ended_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    """What one attempt to deliver came to: accepted (a 2xx), or why not."""

    delivered: bool
    http_status: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    run_id: str = ""
    destination: str = ""
    statuses: tuple[DeliveryStatus, ...] = ()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
