"""Runs: trigger, read, list, cancel, watch; executors tracked from start to end; recovery and
drain."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from workflowd.domain import ids
from workflowd.domain.definition import WorkflowDefinition
from workflowd.domain.errors import (
    FailedPrecondition,
    InvalidRequest,
    OutOfRange,
    Unavailable,
    WorkflowdError,
)
from workflowd.domain.json import Json, ValueTooLarge, nul_pointer
from workflowd.domain.page import Page
from workflowd.domain.run import (
    NewRun,
    Run,
    RunEvent,
    RunFilter,
    RunStatus,
    RunTrigger,
    WatchFilter,
)
from workflowd.domain.workflow import Workflow, WorkflowHead, WorkflowStatus
from workflowd.engine.definitions import Definitions, WorkflowRef
from workflowd.engine.deps import EngineDeps
from workflowd.engine.hub import HubClosed, Subscription
from workflowd.engine.launcher import Launcher
from workflowd.engine.ports import RunTransaction
from workflowd.engine.quotas import TriggerRate
from workflowd.engine.reruns import FROM_FAILURE, replay_point
from workflowd.spec import EvaluationLimitError, SchemaUnusableError

log = logging.getLogger("workflowd.engine")

Ready = Callable[[], Awaitable[None]] | None

_REPLAY_BATCH = 500
_RECOVER_BATCH = 500
_CLAIM_BATCH = 10_000
MAX_REASON_CHARS = 500


@dataclass(frozen=True, slots=True)
class TriggerRequest:
    ref: WorkflowRef
    input: Json = None
    idempotency_key: str = ""
    trigger: RunTrigger = RunTrigger.MANUAL
    scheduled_at: datetime | None = None


def new_run(
    workflow: WorkflowHead,
    trigger: RunTrigger,
    now: datetime,
    *,
    run_input: Json = None,
    scheduled_at: datetime | None = None,
    idempotency_key: str = "",
    rerun_of: str = "",
    replay_until: int = 0,
) -> NewRun:
    """A run of `workflow`'s version, to create (every new run is made here: a trigger, a
    schedule's fire, a backfill); its task instances come as they start."""
    return NewRun(
        id=str(uuid.uuid4()),
        company=workflow.company,
        workflow_id=workflow.id,
        namespace=workflow.namespace,
        name=workflow.name,
        version=workflow.version,
        trigger=trigger,
        input={} if run_input is None else run_input,
        created_at=now,
        idempotency_key=idempotency_key,
        scheduled_at=scheduled_at,
        rerun_of=rerun_of,
        replay_until=replay_until,
    )


def rerun_of(workflow: Workflow, original: Run, start: str, now: datetime) -> NewRun:
    """A re-run of `original` (`reruns.py`): same version and instant, replaying it up to where
    `start` says."""
    return new_run(
        workflow.head,
        RunTrigger.RERUN,
        now,
        run_input=original.input,
        scheduled_at=original.scheduled_at,
        rerun_of=original.id,
        replay_until=replay_point(original, start),
    )


class Runs:
    def __init__(self, deps: EngineDeps, definitions: Definitions) -> None:
        self._deps = deps
        self._definitions = definitions
        self.launcher = Launcher(deps, definitions)
        self._resuming: set[asyncio.Task[None]] = set()
        self._rate = TriggerRate(deps.quotas)

    async def trigger(self, company: str, request: TriggerRequest) -> Run:
        if self.launcher.draining:
            raise Unavailable("workflowd is shutting down and accepts no new runs; retry shortly")
        self._rate.take(company)
        if request.idempotency_key:
            ids.check_key("idempotency_key", request.idempotency_key)
        workflow = await self._definitions.head(company, request.ref)
        if workflow.status == WorkflowStatus.ARCHIVED:
            raise FailedPrecondition(
                f"workflow {workflow.namespace}/{workflow.name} is archived and accepts no runs"
            )
        definition = await self._definitions.definition_of(workflow)
        run_input = {} if request.input is None else request.input
        await self.validate_input(definition, run_input)
        new = new_run(
            workflow,
            request.trigger,
            self._deps.clock.now(),
            run_input=run_input,
            scheduled_at=request.scheduled_at,
            idempotency_key=request.idempotency_key,
        )
        # Shielded: once the run is committed it must start even if the caller goes away.
        return await asyncio.shield(self._create(new, definition))

    async def rerun(
        self, company: str, run_id: str, *, start: str = FROM_FAILURE, input: Json = None
    ) -> Run:
        """A new run of `run_id`'s version and instant, linked to it, replaying it up to
        `start` (`failure`, `start` or a task reference) and going on live from there; with
        `input`, on that input instead of the run's."""
        if self.launcher.draining:
            raise Unavailable("workflowd is shutting down and accepts no new runs; retry shortly")
        original = await self.get(company, run_id)
        workflow = await self._definitions.get(
            company, WorkflowRef(workflow_id=original.workflow_id, version=original.version)
        )
        if workflow.status == WorkflowStatus.ARCHIVED:
            raise FailedPrecondition(
                f"workflow {workflow.namespace}/{workflow.name} is archived and accepts no runs"
            )
        definition = await self._definitions.definition(workflow)
        new = rerun_of(workflow, original, start, self._deps.clock.now())
        if input is not None:
            await self.validate_input(definition, input)
            new = replace(new, input=input)
        self._rate.take(company)
        return await asyncio.shield(self._create(new, definition))

    async def check_input(self, company: str, ref: WorkflowRef, run_input: Json) -> None:
        """What `trigger` would say of `run_input` (its bounds, the workflow's `input.schema`),
        without creating a run: InvalidRequest names where it fails. It costs a schema check
        in the evaluator's workers, as a trigger does, so it draws on the same rate quota."""
        self._rate.take(company)
        workflow = await self._definitions.head(company, ref)
        await self.validate_input(await self._definitions.definition_of(workflow), run_input)

    async def _create(self, new: NewRun, definition: WorkflowDefinition) -> Run:
        run, events, created = await self._deps.store.create_run(new)
        self._deps.hub.publish(events)
        self._deps.metrics.observe_events(events)
        if created:
            self.launcher.start(run, definition)
        return run

    async def validate_input(
        self, definition: WorkflowDefinition, run_input: Json, field: str = "input"
    ) -> None:
        """Refuse (InvalidRequest, naming `field` and a pointer into it) an input a run of
        `definition` cannot have: past the value bounds, or refused by its input.schema."""
        try:
            _, holds_nul = self._deps.limits.values.inspect(run_input)
        except ValueTooLarge as exc:
            raise InvalidRequest(field, f"cannot be stored: {exc}") from None
        # The pointer is looked for only in an input that holds a NUL: one walk, not two.
        nul = nul_pointer(run_input) if holds_nul else None
        if nul is not None:
            # The pointer names keys of the caller's: bounded, like every echo of input.
            raise InvalidRequest(
                f"{field}{nul[:200]}", "holds a NUL character (U+0000), which cannot be stored"
            )
        if not isinstance(definition.input_schema, dict | bool):
            return
        # In a bounded worker, not on the event loop: a `pattern` runs Python's backtracking re.
        try:
            result = await self._deps.evaluator.check_schema(definition.input_schema, run_input)
        except EvaluationLimitError as exc:
            raise InvalidRequest(
                field, f"{exc}: shorten the input or simplify the schema's patterns"
            ) from exc
        except SchemaUnusableError as exc:
            raise FailedPrecondition(
                f"the workflow's input.schema cannot be applied ({exc}): fix it in a new version"
            ) from exc
        if result.message is not None:
            raise InvalidRequest(
                f"{field}{result.pointer}",
                f"does not match the workflow's input.schema: {result.message}",
            )

    async def get(self, company: str, run_id: str) -> Run:
        if not run_id:
            raise InvalidRequest("run_id", "is required")
        ids.check_uuid("run_id", run_id, "run")
        return await self._deps.store.get_run(company, run_id)

    async def list(
        self, company: str, filt: RunFilter, size: int, token: str, *, tasks: bool = True
    ) -> Page[Run]:
        """A page of runs, newest first; without `tasks`, the runs only (a listing)."""
        if filt.workflow_id:
            ids.check_uuid("workflow_id", filt.workflow_id, "workflow")
        if filt.namespace:
            ids.check_name("namespace", filt.namespace)
        if filt.id_prefix:
            ids.check_uuid_prefix("run_id_prefix", filt.id_prefix, "run")
        return await self._deps.store.list_runs(company, filt, size, token, tasks=tasks)

    async def delete(self, company: str, run_id: str) -> None:
        """Delete an ended run with its tasks and events, unless an active run needs it."""
        if not run_id:
            raise InvalidRequest("run_id", "is required")
        ids.check_uuid("run_id", run_id, "run")
        await self._deps.store.delete_run(company, run_id)

    async def cancel(self, company: str, run_id: str, reason: str = "") -> Run:
        """Ask the run to stop (CANCELLING, then CANCELLED once its job stopped); a run that
        has ended is returned as it is."""
        ids.check_text("reason", reason, MAX_REASON_CHARS)
        run = await self.get(company, run_id)
        if run.status.terminal or run.status == RunStatus.CANCELLING:
            return run
        said = f"cancelled on request: {reason}" if reason else "cancelled on request"
        await asyncio.shield(self._request_cancel(run_id, said))
        return await self.get(company, run_id)

    async def _request_cancel(self, run_id: str, reason: str) -> None:
        def change(tx: RunTransaction) -> None:
            tx.request_cancel(reason)

        # Any replica may ask; the run's owner hears of it from the shared log. Urgent: a cancel
        # never waits behind the backlog of writes it is meant to stop.
        events = await self._deps.store.update_run(
            run_id, self._deps.clock.now(), change, owned=False, urgent=True
        )
        self._deps.hub.publish(events)
        self.launcher.request_cancel(run_id, reason)

    async def recover(self, *, takeover: bool) -> int:
        """Claim and resume the active runs this process is to execute; returns how many: with
        `takeover` (the only daemon on its store) every one, else those of replicas whose lease
        ran out.

        Only their ids are claimed before the API serves: the launcher then knows them, so a
        cancel that arrives before a run's executor exists is kept for it, and a run created
        to wait for one of them waits. The runs themselves are read in batches (oldest first,
        each workflow version once) and started in the background, yielding to the API between
        batches, so a restart with many runs in flight serves at once."""
        claimed = 0
        while True:
            ids = await self._deps.store.claim_runs(
                self._deps.clock.now(), takeover=takeover, limit=_CLAIM_BATCH
            )
            claimed += len(ids)
            if ids:
                self.launcher.expect(ids)
                task = asyncio.create_task(self._resume(ids), name="resume-runs")
                self._resuming.add(task)
                task.add_done_callback(self._resuming.discard)
            if len(ids) < _CLAIM_BATCH:
                return claimed

    async def _resume(self, active: Sequence[str]) -> None:
        definitions: dict[tuple[str, str], WorkflowDefinition] = {}
        for start in range(0, len(active), _RECOVER_BATCH):
            batch = [*active[start : start + _RECOVER_BATCH]]
            for run in await self._deps.store.runs_by_id(batch):
                key = (run.workflow_id, run.version)
                try:
                    if key not in definitions:
                        ref = WorkflowRef(workflow_id=run.workflow_id, version=run.version)
                        workflow = await self._definitions.get(run.company, ref)
                        definitions[key] = await self._definitions.definition(workflow)
                except WorkflowdError:
                    log.exception("run %s cannot resume: its workflow cannot be read", run.id)
                    continue
                self.launcher.start(run, definitions[key])
            await asyncio.sleep(0)  # let waiting API calls answer between batches

    async def resumed(self) -> None:
        """Wait until every run claimed so far has its executor (tests, benchmarks)."""
        await asyncio.gather(*self._resuming)

    def refuse_new(self) -> None:
        self.launcher.refuse_new()

    async def drain(self) -> None:
        """Stop every executor without touching stored state: a restart resumes them."""
        resuming = [*self._resuming]
        for task in resuming:
            task.cancel("workflowd is draining")
        await asyncio.gather(*resuming, return_exceptions=True)
        await self.launcher.drain()

    async def watch(
        self, company: str, run_id: str, after_seq: int, on_subscribed: Ready = None
    ) -> AsyncIterator[RunEvent]:
        """Stored events after `after_seq`, then live ones, until the terminal event."""
        await self.get(company, run_id)
        if after_seq > 0:
            seen = await self._deps.store.events_after(company, run_id, after_seq - 1, 1)
            if not seen or seen[0].seq != after_seq:
                raise InvalidRequest("after_seq", f"run {run_id} has no event {after_seq} yet")
            if seen[0].terminal:
                return  # the watcher has seen the end already
        sub = self._subscribe(lambda: self._deps.hub.subscribe_run(run_id))
        try:
            if on_subscribed is not None:
                await on_subscribed()
            last = after_seq
            while True:
                replay = await self._deps.store.events_after(company, run_id, last, _REPLAY_BATCH)
                for event in replay:
                    yield event
                    last = event.seq
                    if event.terminal:
                        return
                if len(replay) == _REPLAY_BATCH:
                    continue
                # Subscribed before the replay read: an event committed after that read is
                # published after it, so it arrives live; without a terminal event so far the
                # run had not ended, and its end will come live too.
                async for event in self._live(sub, lambda e: e.seq, last):
                    yield event
                    last = event.seq
                    if event.terminal:
                        return
        finally:
            self._deps.hub.unsubscribe(sub, run_id)
            self._deps.metrics.watchers.set(self._deps.hub.watchers)

    async def watch_many(
        self, company: str, filt: WatchFilter, on_subscribed: Ready = None
    ) -> AsyncIterator[RunEvent]:
        """Events of every matching run: those stored after `filt.after_global_seq` (none when
        it is 0), then live ones. `on_subscribed` runs once nothing live can be missed."""
        await self._check_watch_filter(company, filt)
        sub = self._subscribe(
            lambda: self._deps.hub.subscribe(lambda e: e.company == company and filt.matches(e))
        )
        try:
            last = filt.after_global_seq or await self._deps.store.last_company_seq(company)
            if on_subscribed is not None:
                await on_subscribed()
            while True:
                # Events deleted while the watcher lagged would be a silent gap: it is told.
                await self._check_kept(company, last)
                replay = await self._deps.store.events_after_global(
                    company, filt, last, _REPLAY_BATCH
                )
                for event in replay:
                    yield event
                    last = event.global_seq
                if len(replay) == _REPLAY_BATCH:
                    continue
                async for event in self._live(sub, lambda e: e.global_seq, last, gapless=False):
                    yield event
                    last = event.global_seq
        finally:
            self._deps.hub.unsubscribe(sub)
            self._deps.metrics.watchers.set(self._deps.hub.watchers)

    async def last_event_seq(self, company: str) -> int:
        """The `global_seq` of the company's last event (0 before any)."""
        return await self._deps.store.last_company_seq(company)

    async def has_event(self, company: str, run_id: str, seq: int) -> bool:
        """Whether the run has an event `seq` (a watcher may resume after it)."""
        if seq < 1:
            return False
        found = await self._deps.store.events_after(company, run_id, seq - 1, 1)
        return bool(found) and found[0].seq == seq

    async def _check_watch_filter(self, company: str, filt: WatchFilter) -> None:
        if filt.workflow_id:
            ids.check_uuid("workflow_id", filt.workflow_id, "workflow")
        if filt.namespace:
            ids.check_name("namespace", filt.namespace)
        if filt.after_global_seq < 0:
            raise InvalidRequest("after_global_seq", "must not be negative")
        # Compared with the company's own last event: the answer tells nothing of others'.
        if filt.after_global_seq > await self._deps.store.last_company_seq(company):
            raise InvalidRequest(
                "after_global_seq",
                f"{filt.after_global_seq} is ahead of the event log: resume from a global_seq "
                "you received",
            )

    async def _check_kept(self, company: str, after: int) -> None:
        """Refuse to resume after `after` when events past it were deleted (retention, a
        deleted run): the watcher would miss them without knowing."""
        pruned = await self._deps.store.pruned_through(company)
        if after < pruned:
            raise OutOfRange(
                f"after_global_seq {after} is older than what is kept: events up to {pruned}"
                f" were deleted (retention or deleted runs); the oldest kept sequence is"
                f" {pruned + 1}: resume from after_global_seq {pruned}, or 0 for live events only"
            )

    def _subscribe(self, make: Callable[[], Subscription]) -> Subscription:
        try:
            sub = make()
        except HubClosed as exc:
            raise Unavailable("workflowd is shutting down; reconnect to resume") from exc
        self._deps.metrics.watchers.set(self._deps.hub.watchers)
        return sub

    async def _live(
        self,
        sub: Subscription,
        position: Callable[[RunEvent], int],
        last: int,
        gapless: bool = True,
    ) -> AsyncIterator[RunEvent]:
        """Live events after `last`; returns when the caller must re-read the store (the
        subscriber lagged, or a per-run sequence skipped a number)."""
        while True:
            try:
                event = await sub.next()
            except HubClosed as exc:
                raise Unavailable(
                    "workflowd is shutting down; reconnect with your last sequence number"
                ) from exc
            if event is None:
                return
            pos = position(event)
            if pos <= last:
                continue
            if gapless and pos != last + 1:
                return
            yield event
            last = pos
