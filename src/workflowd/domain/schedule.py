"""A workflow's schedule as stored: what fires (the spec's `schedule` block), how (overlap and
catch-up policies), where it stands (next instant, active) and what it decided (fire records)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from workflowd.domain.definition import Schedule
from workflowd.domain.json import Json
from workflowd.domain.run import NewRun, RunEvent


class OverlapPolicy(StrEnum):
    """What a fire does while the previous scheduled run is still active."""

    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    ALLOW_ALL = "allow_all"
    CANCEL_OTHER = "cancel_other"


class CatchupPolicy(StrEnum):
    """Which instants missed while no scheduler ran are fired once one runs again."""

    LATEST = "latest"
    ALL = "all"
    NONE = "none"


class RerunPolicy(StrEnum):
    """What a backfill does with an instant that has a run already."""

    NONE = "none"
    """Keep it (a backfill is idempotent)."""
    FAILED = "failed"
    """Re-run it from its failure when its latest run failed."""
    ALL = "all"
    """Re-run it from the start when its latest run has ended."""


class FireOutcome(StrEnum):
    FIRED = "fired"
    SKIPPED = "skipped"
    BUFFERED = "buffered"
    CANCELLED_PREVIOUS = "cancelled_previous"
    CAUGHT_UP = "caught_up"
    MISSED = "missed"
    STOPPED = "stopped"
    RERUN = "rerun"

    @property
    def creates_run(self) -> bool:
        return self in (
            FireOutcome.FIRED,
            FireOutcome.BUFFERED,
            FireOutcome.CANCELLED_PREVIOUS,
            FireOutcome.CAUGHT_UP,
        )


@dataclass(frozen=True, slots=True)
class FireDecision:
    """What the scheduler decided for one instant, and why."""

    instant: datetime
    outcome: FireOutcome
    reason: str
    decided_at: datetime
    run_id: str = ""


@dataclass(frozen=True, slots=True)
class SchedulePolicies:
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    catchup: CatchupPolicy = CatchupPolicy.LATEST
    catchup_window_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class WorkflowSchedule:
    workflow_id: str
    company: str
    namespace: str
    name: str
    version: str
    """The workflow version whose `schedule` block this is."""
    spec: Schedule
    policies: SchedulePolicies
    active: bool
    anchor: datetime
    """When the schedule was activated: the phase of `every` intervals."""
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    created_at: datetime
    updated_at: datetime
    input: Json
    """The input of the runs it creates: fires, catch-ups and backfills."""
    decisions: tuple[FireDecision, ...] = ()
    """The most recent decisions, newest first."""


@dataclass(frozen=True, slots=True)
class ActiveRun:
    """A scheduled run of the workflow that has not ended."""

    run_id: str
    waiting: bool
    """Created but waiting for another run to end (a buffered fire)."""


@dataclass(frozen=True, slots=True)
class OverlapDecision:
    outcome: FireOutcome
    reason: str
    after_run_id: str = ""
    """The new run starts only once this run has ended."""
    cancel: tuple[str, ...] = ()


def decide_overlap(
    policy: OverlapPolicy, active: Sequence[ActiveRun], catching_up: bool
) -> OverlapDecision:
    """What one instant's fire does, given the workflow's scheduled runs that have not ended."""
    fired = FireOutcome.CAUGHT_UP if catching_up else FireOutcome.FIRED
    if not active:
        return OverlapDecision(fired, "no earlier scheduled run is active")
    latest = active[-1].run_id
    if policy is OverlapPolicy.ALLOW_ALL:
        return OverlapDecision(fired, f"run {latest} is still active; ALLOW_ALL lets runs overlap")
    if policy is OverlapPolicy.SKIP:
        return OverlapDecision(FireOutcome.SKIPPED, f"run {latest} is still active (SKIP)")
    if policy is OverlapPolicy.BUFFER_ONE:
        waiting = [run.run_id for run in active if run.waiting]
        if waiting:
            reason = f"run {waiting[-1]} already waits its turn; BUFFER_ONE keeps one"
            return OverlapDecision(FireOutcome.SKIPPED, reason)
        reason = f"run {latest} is still active; this run starts when it ends (BUFFER_ONE)"
        return OverlapDecision(FireOutcome.BUFFERED, reason, after_run_id=latest)
    cancelled = tuple(run.run_id for run in active)
    reason = f"cancelled {', '.join(cancelled)}; this run starts once they have stopped"
    return OverlapDecision(
        FireOutcome.CANCELLED_PREVIOUS, reason, after_run_id=latest, cancel=cancelled
    )


def cancel_other_reason(instant: datetime) -> str:
    """What a run cancelled by a CANCEL_OTHER fire says about who cancelled it."""
    return f"cancelled by the schedule's CANCEL_OTHER policy, firing {instant.isoformat()}"


class NextFire(Protocol):
    """The first instant a schedule fires strictly after `after` (None: it never fires again);
    `anchor` is the phase of `every` schedules."""

    def __call__(self, spec: Schedule, anchor: datetime, after: datetime) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class Activation:
    company: str
    workflow_id: str
    namespace: str
    name: str
    version: str
    spec: Schedule
    policies: SchedulePolicies
    now: datetime
    input: Json
    """The runs' input, checked against the version's input.schema."""


@dataclass(frozen=True, slots=True)
class FireRequest:
    workflow_id: str
    instant: datetime
    version: str
    """The version whose schedule computed `instant`: a newer one makes the request stale."""
    catching_up: bool
    run: NewRun
    """The run to create if the decision creates one (scheduled at `instant`)."""
    now: datetime


@dataclass(frozen=True, slots=True)
class FireResult:
    decision: FireDecision | None
    """None when the instant was already decided, or the schedule moved on meanwhile."""
    run_id: str = ""
    """The run the fire created, if any."""
    events: tuple[RunEvent, ...] = ()
    cancelled: tuple[str, ...] = ()
