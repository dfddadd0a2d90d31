"""Schedules: activate, stop, read, backfill, and what a fire does (the `FireTarget` the
scheduler's loop calls when an instant comes).

A fire reads its schedule from the store, decides whether it is on time or catching up after
downtime, and commits each instant in one transaction (decision, run, cancel requests, next
instant); only then are runs started and events published.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from workflowd.domain import ids
from workflowd.domain.definition import WorkflowDefinition
from workflowd.domain.errors import (
    FailedPrecondition,
    InvalidRequest,
    NotFound,
    Unavailable,
    WorkflowdError,
)
from workflowd.domain.fairness import acting_for
from workflowd.domain.json import Json
from workflowd.domain.page import Page
from workflowd.domain.run import NewRun, Run, RunStatus, RunTrigger
from workflowd.domain.schedule import (
    Activation,
    CatchupPolicy,
    FireDecision,
    FireOutcome,
    FireRequest,
    FireResult,
    OverlapPolicy,
    RerunPolicy,
    SchedulePolicies,
    WorkflowSchedule,
    cancel_other_reason,
)
from workflowd.domain.workflow import Workflow, WorkflowStatus
from workflowd.engine import catchup, fires
from workflowd.engine.definitions import Definitions, WorkflowRef
from workflowd.engine.deps import EngineDeps
from workflowd.engine.ports import ScheduleStore
from workflowd.engine.reruns import FROM_FAILURE, FROM_START
from workflowd.engine.runs import Runs, TriggerRequest, new_run, rerun_of

log = logging.getLogger("workflowd.scheduler")

UPCOMING = 10
MAX_CATCHUP_WINDOW_S = 366 * 86400.0
MAX_REASON_CHARS = 1000


@dataclass(frozen=True, slots=True)
class ScheduleLimits:
    max_backfill_runs: int = 1000
    # After downtime, a catch-up fires at most this many instants (the latest); the others
    # are recorded missed.
    max_catchup_runs: int = 100
    # A fire processed this late is still on time; later, it is a catch-up (the scheduler was
    # not running at the instant).
    on_time_s: float = 60.0


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """Requested policies; None keeps the current one (or the default)."""

    overlap: OverlapPolicy | None = None
    catchup: CatchupPolicy | None = None
    catchup_window_s: float | None = None


@dataclass(frozen=True, slots=True)
class ScheduleView:
    schedule: WorkflowSchedule
    upcoming: tuple[datetime, ...]
    overdue_s: float | None = None
    """How long ago its next instant came without having fired yet (the scheduler's backlog);
    None when that instant is still to come."""


@dataclass(frozen=True, slots=True)
class Backfill:
    runs: tuple[Run, ...]
    created: frozenset[str]
    """The ids of the runs this backfill created (the others' instants had them already)."""


class LoopPort(Protocol):
    @property
    def scheduled(self) -> int: ...

    def set(self, workflow_id: str, instant: datetime | None) -> None: ...


class Schedules:
    def __init__(
        self,
        deps: EngineDeps,
        store: ScheduleStore,
        definitions: Definitions,
        runs: Runs,
        limits: ScheduleLimits,
    ) -> None:
        self._deps = deps
        self._store = store
        self._definitions = definitions
        self._runs = runs
        self._limits = limits
        self._loop: LoopPort | None = None
        # Whose each schedule the loop knows is: a fire acts for its company from its first
        # read (see `domain/fairness.py`).
        self._companies: dict[str, str] = {}

    def attach(self, loop: LoopPort) -> None:
        """The scheduler loop to tell when a schedule's next instant changes."""
        self._loop = loop

    # --- requests ------------------------------------------------------------------------

    async def activate(
        self,
        company: str,
        workflow_id: str,
        change: PolicyChange,
        trigger_now: bool,
        run_input: Json = None,
        input_field: str = "input",
    ) -> tuple[ScheduleView, str]:
        """Activate the schedule (or change its policies); `run_input`, when given, becomes the
        input of its runs, which the version's input.schema must accept."""
        workflow = await self._workflow(company, workflow_id)
        definition = await self._definitions.definition(workflow)
        if definition.schedule is None:
            raise FailedPrecondition(
                f"workflow {workflow.namespace}/{workflow.name} version {workflow.version} has "
                "no schedule block: add schedule.cron or schedule.every in a new version"
            )
        current = await self._store.schedule_of(workflow.id)
        policies = _merge(current.policies if current else SchedulePolicies(), change)
        kept = {} if current is None else current.input
        schedule_input = kept if run_input is None else run_input
        await self._check_input(
            definition, schedule_input, input_field if run_input is not None else ""
        )
        activation = Activation(
            company=company,
            workflow_id=workflow.id,
            namespace=workflow.namespace,
            name=workflow.name,
            version=workflow.version,
            spec=definition.schedule,
            policies=policies,
            now=self._deps.clock.now(),
            input=schedule_input,
        )
        schedule = await self._store.activate_schedule(activation, fires.next_fire)
        self._tell_loop(schedule)
        run_id = ""
        if trigger_now:
            run = await self._runs.trigger(
                company,
                TriggerRequest(
                    ref=WorkflowRef(workflow_id=workflow.id),
                    input=schedule.input,
                    trigger=RunTrigger.SCHEDULE,
                    scheduled_at=activation.now,
                ),
            )
            run_id = run.id
        return self._view(schedule), run_id

    async def admit_version(
        self,
        company: str,
        definition: WorkflowDefinition,
        activating: bool,
        run_input: Json = None,
    ) -> None:
        """Refuse a version, before it is stored, whose input.schema refuses the input its
        schedule's runs would get: the schedule it activates (`activating`, with `run_input`
        or the schedule's current input), or the active schedule it would move."""
        try:
            workflow = await self._definitions.get(
                company, WorkflowRef(namespace=definition.namespace, name=definition.name)
            )
        except NotFound:
            current = None
        else:
            current = await self._store.schedule_of(workflow.id)
        kept = {} if current is None else current.input
        if activating:
            value = kept if run_input is None else run_input
            field = "schedule_input" if run_input is not None else ""
            hint = "give the schedule an input its input.schema accepts in schedule_input"
            await self._check_input(definition, value, field, hint)
        elif current is not None and current.active and definition.schedule is not None:
            try:
                await self._runs.validate_input(definition, current.input)
            except InvalidRequest as exc:
                raise FailedPrecondition(
                    f"version {definition.version} of {definition.namespace}/{definition.name}"
                    f" would refuse the input of its active schedule, {_shown(current.input)}"
                    f" ({exc.message}): unschedule it with UnscheduleWorkflow, store the"
                    " version, then schedule it with an input its input.schema accepts"
                ) from None

    async def _check_input(
        self,
        definition: WorkflowDefinition,
        value: Json,
        field: str,
        hint: str = "give the schedule an input its input.schema accepts with ScheduleWorkflow",
    ) -> None:
        """The schedule's input against the version: a given one (`field`) is the request's
        problem; one kept from before, or the default `{}`, is the schedule's (`hint` says
        how to give one)."""
        if field:
            await self._runs.validate_input(definition, value, field)
            return
        try:
            await self._runs.validate_input(definition, value)
        except InvalidRequest as exc:
            name = f"{definition.namespace}/{definition.name} version {definition.version}"
            raise FailedPrecondition(
                f"the schedule's runs would get the input {_shown(value)}, which {name} refuses"
                f" ({exc.message}): {hint}"
            ) from None

    async def deactivate(self, company: str, workflow_id: str) -> ScheduleView:
        ids.check_uuid("workflow_id", workflow_id, "workflow")
        now = self._deps.clock.now()
        schedule = await self._store.deactivate_schedule(
            company, workflow_id, now, "unscheduled on request"
        )
        self._tell_loop(schedule)
        return self._view(schedule)

    async def get(self, company: str, workflow_id: str) -> ScheduleView:
        ids.check_uuid("workflow_id", workflow_id, "workflow")
        return self._view(await self._store.get_schedule(company, workflow_id))

    async def list_page(
        self, company: str, namespace: str, size: int, token: str
    ) -> Page[ScheduleView]:
        if namespace:
            ids.check_name("namespace", namespace)
        page = await self._store.list_schedules(company, namespace, size, token)
        return Page([self._view(s) for s in page.items], page.after, page.more)

    async def changed(self, workflow_id: str) -> None:
        """A workflow's version or status changed: its schedule may have moved."""
        schedule = await self._store.schedule_of(workflow_id)
        if schedule is not None:
            self._tell_loop(schedule)

    def forget(self, workflow_id: str) -> None:
        """The workflow was deleted: the loop drops its schedule, if it still had one."""
        self._companies.pop(workflow_id, None)
        if self._loop is not None:
            self._loop.set(workflow_id, None)
            self._deps.metrics.active_schedules.set(self._loop.scheduled)

    async def backfill(
        self,
        company: str,
        workflow_id: str,
        start: datetime,
        end: datetime,
        sequential: bool,
        rerun: RerunPolicy = RerunPolicy.NONE,
    ) -> Backfill:
        workflow = await self._workflow(company, workflow_id)
        definition = await self._definitions.definition(workflow)
        if definition.schedule is None:
            raise FailedPrecondition(
                f"workflow {workflow.namespace}/{workflow.name} version {workflow.version} has "
                "no schedule block: backfill follows the schedule's instants"
            )
        now = self._deps.clock.now()
        _check_range(start, end, now)
        current = await self._store.schedule_of(workflow.id)
        anchor = current.anchor if current is not None else start
        run_input = {} if current is None else current.input
        await self._check_input(definition, run_input, "")
        cap = self._limits.max_backfill_runs
        instants = fires.between(definition.schedule, anchor, start, end, cap + 1)
        if len(instants) > cap:
            raise InvalidRequest(
                "end_time",
                f"the range holds more than {cap} instants of the schedule; backfill at most "
                f"{cap} at a time (the {cap}th is {instants[cap - 1].isoformat()})",
            )
        news = [
            new_run(workflow.head, RunTrigger.BACKFILL, now, run_input=run_input, scheduled_at=t)
            for t in instants
        ]
        if rerun is not RerunPolicy.NONE:
            news = await self._reruns(workflow, news, rerun, now)
        created = await self._store.create_backfill(news, sequential, now)
        for run, events, is_new in created:
            self._deps.hub.publish(events)
            self._deps.metrics.observe_events(events)
            if is_new:
                self._runs.launcher.start(run, definition)
        return Backfill(
            tuple(run for run, _, _ in created), frozenset(run.id for run, _, new in created if new)
        )

    async def _reruns(
        self, workflow: Workflow, news: list[NewRun], rerun: RerunPolicy, now: datetime
    ) -> list[NewRun]:
        """The backfill's runs, with a re-run in place of each instant whose latest run the
        policy re-runs: from its failure when it failed (`failed`, `all`), from the start when
        it completed or was cancelled (`all`)."""
        instants = [new.scheduled_at for new in news if new.scheduled_at is not None]
        latest = await self._store.latest_runs_at(workflow.company, workflow.id, instants)
        out: list[NewRun] = []
        for new in news:
            found = latest.get(new.scheduled_at) if new.scheduled_at is not None else None
            if found is None or not found.status.terminal:
                out.append(new)
            elif found.status == RunStatus.FAILED:
                out.append(rerun_of(workflow, found, FROM_FAILURE, now))
            elif rerun is RerunPolicy.ALL:
                out.append(rerun_of(workflow, found, FROM_START, now))
            else:
                out.append(new)
        return out

    # --- the scheduler's FireTarget ------------------------------------------------------

    async def due(self) -> list[tuple[str, datetime]]:
        return await self._store.due_schedules()

    async def fire(self, workflow_id: str, instant: datetime) -> datetime | None:
        acting_for.set(self._companies.get(workflow_id, ""))  # each fire is a task of its own
        schedule = await self._store.schedule_of(workflow_id)
        if schedule is None or not schedule.active:
            self._companies.pop(workflow_id, None)
            return None
        self._companies[workflow_id] = schedule.company
        acting_for.set(schedule.company)
        if schedule.next_fire_at != instant:
            return schedule.next_fire_at  # another scheduler, or a new version, moved it on
        now = self._deps.clock.now()
        if (now - instant).total_seconds() <= self._limits.on_time_s:
            # The next instant follows this one, not now: instants that came while this one
            # waited are due at once, and each is fired, caught up or recorded missed.
            following = fires.next_fire(schedule.spec, schedule.anchor, instant)
            await self._fire_one(schedule, instant, False, following)
            return following
        return await self._catch_up(schedule, now)

    async def _catch_up(self, schedule: WorkflowSchedule, now: datetime) -> datetime | None:
        """Instants missed while no scheduler ran: the latest fire by the policy (at most
        `max_catchup_runs`), the others are recorded as missed (one record for the lot)."""
        # Off the event loop: a cron walked over a long window may take a while.
        planned = await asyncio.to_thread(
            catchup.plan, schedule, now, self._limits.max_catchup_runs
        )
        if planned.missed is not None:
            firing = planned.firing
            next_at = firing[0] if firing else planned.following
            await self._store.record_decision(schedule.workflow_id, planned.missed, next_at)
            self._observe(schedule, planned.missed, True)
        for index, instant in enumerate(planned.firing):
            after = planned.firing[index + 1] if index + 1 < len(planned.firing) else None
            await self._fire_one(schedule, instant, True, after or planned.following)
        return planned.following

    async def _fire_one(
        self,
        schedule: WorkflowSchedule,
        instant: datetime,
        catching_up: bool,
        following: datetime | None,
    ) -> None:
        now = self._deps.clock.now()
        try:
            fired = await self._commit_fire(schedule, instant, catching_up, following, now)
        except Unavailable:
            raise  # the store is down: the loop retries the instant
        except WorkflowdError as exc:
            # Retrying cannot help (the stored version no longer parses, the store refuses a
            # value): the instant is decided, saying why, and the schedule moves on.
            fired = ids.printable(f"the run cannot be created: {exc.message}")[:MAX_REASON_CHARS]
        if isinstance(fired, str):
            decision = FireDecision(instant, FireOutcome.SKIPPED, fired, now)
            await self._store.record_decision(schedule.workflow_id, decision, following)
            self._observe(schedule, decision, catching_up)
            return
        result, run, definition = fired
        self._deps.crash_point("after_fire_commit")
        self._deps.hub.publish(list(result.events))
        self._deps.metrics.observe_events(result.events)
        reason = cancel_other_reason(instant)
        for run_id in result.cancelled:
            self._runs.launcher.request_cancel(run_id, reason)
        if run is not None:
            self._runs.launcher.start(run, definition)
        if result.decision is not None:
            self._observe(schedule, result.decision, catching_up)

    async def _commit_fire(
        self,
        schedule: WorkflowSchedule,
        instant: datetime,
        catching_up: bool,
        following: datetime | None,
        now: datetime,
    ) -> tuple[FireResult, Run | None, WorkflowDefinition] | str:
        """The committed fire, or why it creates no run (the schema refuses its input)."""
        workflow = await self._definitions.head(
            schedule.company,
            WorkflowRef(workflow_id=schedule.workflow_id, version=schedule.version),
        )
        definition = await self._definitions.definition_of(workflow)
        refusal = await self._input_refusal(definition, schedule.input)
        if refusal:
            return refusal
        new = new_run(
            workflow, RunTrigger.SCHEDULE, now, run_input=schedule.input, scheduled_at=instant
        )
        request = FireRequest(
            schedule.workflow_id, instant, schedule.version, catching_up, new, now
        )
        result, run = await self._store.fire(request, following)
        return result, run, definition

    async def _input_refusal(self, definition: WorkflowDefinition, value: Json) -> str:
        """Why the schedule's input cannot be a run's of `definition` (activation and new
        versions check it; this is the last guard, for a schedule stored before they did)."""
        try:
            await self._runs.validate_input(definition, value)
        except InvalidRequest as exc:
            return f"the schedule's input {_shown(value)} is refused: {exc.message}"
        except FailedPrecondition as exc:
            return exc.message
        return ""

    def _observe(
        self, schedule: WorkflowSchedule, decision: FireDecision, catching_up: bool
    ) -> None:
        metrics = self._deps.metrics
        metrics.schedule_fires.labels(decision.outcome.value).inc()
        labels = metrics.workflow(schedule.company, schedule.namespace, schedule.name)
        metrics.workflow_schedule_decisions.labels(*labels, decision.outcome.value).inc()
        if not catching_up:
            late = max(0.0, (decision.decided_at - decision.instant).total_seconds())
            metrics.fire_lateness.observe(late)
            metrics.workflow_schedule_lateness.labels(*labels).observe(late)

    # --- helpers -------------------------------------------------------------------------

    async def _workflow(self, company: str, workflow_id: str) -> Workflow:
        workflow = await self._definitions.get(company, WorkflowRef(workflow_id=workflow_id))
        if workflow.status == WorkflowStatus.ARCHIVED:
            raise FailedPrecondition(
                f"workflow {workflow.namespace}/{workflow.name} is archived: it has no schedule"
            )
        return workflow

    def _view(self, schedule: WorkflowSchedule) -> ScheduleView:
        if not schedule.active or schedule.next_fire_at is None:
            return ScheduleView(schedule, ())
        after = schedule.next_fire_at - timedelta(microseconds=1)
        late = (self._deps.clock.now() - schedule.next_fire_at).total_seconds()
        return ScheduleView(
            schedule,
            tuple(fires.upcoming(schedule.spec, schedule.anchor, after, UPCOMING)),
            late if late >= 0 else None,
        )

    def _tell_loop(self, schedule: WorkflowSchedule) -> None:
        if schedule.active:
            self._companies[schedule.workflow_id] = schedule.company
        else:
            self._companies.pop(schedule.workflow_id, None)
        if self._loop is not None:
            self._loop.set(schedule.workflow_id, schedule.next_fire_at if schedule.active else None)
            self._deps.metrics.active_schedules.set(self._loop.scheduled)


def _merge(current: SchedulePolicies, change: PolicyChange) -> SchedulePolicies:
    window = (
        current.catchup_window_s if change.catchup_window_s is None else change.catchup_window_s
    )
    if not 0 <= window <= MAX_CATCHUP_WINDOW_S:
        raise InvalidRequest("catchup_window", "must be between 0 and 366 days")
    return SchedulePolicies(
        overlap=change.overlap or current.overlap,
        catchup=change.catchup or current.catchup,
        catchup_window_s=window,
    )


def _shown(value: Json) -> str:
    """A schedule's input as a message quotes it: bounded, printable."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return ids.printable(text if len(text) <= 120 else f"{text[:117]}...")


def _check_range(start: datetime, end: datetime, now: datetime) -> None:
    if end <= start:
        raise InvalidRequest("end_time", "must be after start_time")
    if end > now:
        raise InvalidRequest(
            "end_time",
            "is in the future: a backfill covers past instants; the schedule fires future ones",
        )
