"""Retention: policies per workflow and per namespace over the daemon's default, applied on
request (`ApplyRetention`) and periodically in the background.

A pass goes workflow by workflow, and each workflow's runs in bounded batches (one short write
each, `store/retention.py`); the space they took is then given back (`Store.reclaim`). What the
policy that applies is: the workflow's own, else its namespace's, else the default.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from workflowd.domain.errors import InvalidRequest, WorkflowdError
from workflowd.domain.fairness import acting_for
from workflowd.domain.retention import (
    PolicyKey,
    RetentionOutcome,
    RetentionPolicy,
    RetentionScope,
    RetentionSource,
    RetentionView,
    Sweep,
)
from workflowd.domain.units import plural
from workflowd.engine.clock import Clock
from workflowd.engine.definitions import DELETE_BATCH

log = logging.getLogger("workflowd.retention")

_WORKFLOW_PAGE = 500


class RetentionStore(Protocol):
    async def set_retention_policy(
        self,
        company: str,
        scope: RetentionScope,
        policy: RetentionPolicy | None,
        now: datetime,
    ) -> None: ...

    async def retention_policies(self, company: str) -> dict[PolicyKey, RetentionPolicy]: ...

    async def retention_workflows(
        self, company: str, scope: RetentionScope, after: int, limit: int
    ) -> list[tuple[int, str, str, str]]: ...

    async def keep_last_bound(self, workflow_id: str, keep_last: int) -> int | None: ...

    async def sweep(
        self,
        company: str,
        workflow_id: str,
        policy: RetentionPolicy,
        now: datetime,
        *,
        after: int,
        before: int | None,
        limit: int,
        dry_run: bool,
    ) -> Sweep: ...

    async def reclaim(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    default: RetentionPolicy
    """The daemon's default, for workflows and namespaces without a policy of their own."""
    interval_s: float = 3600.0
    """How often the background pass runs."""
    batch: int = DELETE_BATCH


class Retention:
    def __init__(self, store: RetentionStore, clock: Clock, settings: RetentionSettings) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings

    # --- policies ------------------------------------------------------------------------

    async def set_policy(
        self, company: str, scope: RetentionScope, policy: RetentionPolicy | None
    ) -> RetentionView:
        if not scope.namespace:
            raise InvalidRequest(
                "namespace",
                "is required: name a workflow, or a namespace; the default policy is the"
                " daemon's (its retention_* settings)",
            )
        if policy is not None:
            policy.check("policy.")
        stored = None if policy is None or policy.empty else policy
        await self._store.set_retention_policy(company, scope, stored, self._clock.now())
        return await self.get_policy(company, scope)

    async def get_policy(self, company: str, scope: RetentionScope) -> RetentionView:
        found = await self._store.retention_policies(company)
        own = found.get((company, scope.namespace, scope.workflow_id)) if scope.namespace else None
        effective, source = self._effective(found, company, scope.namespace, scope.workflow_id)
        if not scope.namespace:
            own = self._settings.default if not self._settings.default.empty else None
        return RetentionView(own, effective, source)

    def _effective(
        self,
        found: Mapping[PolicyKey, RetentionPolicy],
        company: str,
        namespace: str,
        workflow_id: str,
    ) -> tuple[RetentionPolicy, RetentionSource]:
        if workflow_id and (own := found.get((company, namespace, workflow_id))):
            return own, RetentionSource.WORKFLOW
        if namespace and (shared := found.get((company, namespace, ""))):
            return shared, RetentionSource.NAMESPACE
        if not self._settings.default.empty:
            return self._settings.default, RetentionSource.DEFAULT
        return RetentionPolicy(), RetentionSource.NONE

    # --- passes --------------------------------------------------------------------------

    async def apply(
        self, company: str, scope: RetentionScope, dry_run: bool = False
    ) -> RetentionOutcome:
        """Delete (or count, `dry_run`) the company's ended runs in `scope` that the policies
        let go now (every company's with `company` empty: the background pass). Passes may
        overlap (a request during the background pass): each batch is a transaction of its
        own, and a run one pass deleted is not found by the other."""
        found = await self._store.retention_policies(company)
        now = self._clock.now()
        outcome = RetentionOutcome(dry_run=dry_run)
        after = 0
        while page := await self._store.retention_workflows(company, scope, after, _WORKFLOW_PAGE):
            for seq, workflow_id, owner, namespace in page:
                after = seq
                policy, source = self._effective(found, owner, namespace, workflow_id)
                if source is RetentionSource.NONE:
                    continue
                acting_for.set(owner)  # its writes queue in its company's line
                deleted, protected = await self._workflow(owner, workflow_id, policy, now, dry_run)
                outcome = RetentionOutcome(
                    outcome.deleted + deleted,
                    outcome.protected + protected,
                    outcome.workflows + 1,
                    dry_run,
                )
        if outcome.deleted and not dry_run:
            await self._store.reclaim()
        return outcome

    async def _workflow(
        self,
        company: str,
        workflow_id: str,
        policy: RetentionPolicy,
        now: datetime,
        dry_run: bool,
    ) -> tuple[int, int]:
        before = None
        if policy.keep_last:
            before = await self._store.keep_last_bound(workflow_id, policy.keep_last)
            if before is None:
                return 0, 0
        deleted = protected = 0
        after: int | None = 0
        while after is not None:
            swept = await self._store.sweep(
                company, workflow_id, policy, now,
                after=after, before=before, limit=self._settings.batch, dry_run=dry_run,
            )  # fmt: skip
            deleted += swept.deleted
            protected += swept.protected
            after = swept.next_after
        return deleted, protected

    async def run(self) -> None:
        """The background pass, every `interval_s`, until cancelled; a failed pass is logged
        and the next one comes at its time."""
        while True:
            await self._sleep(self._settings.interval_s)
            try:
                outcome = await self.apply("", RetentionScope())
            except WorkflowdError as exc:
                log.warning("retention pass failed, retried in the next: %s", exc.message)
                continue
            except Exception:
                # A bug must not end retention for the daemon's life: said, and tried again.
                log.exception("retention pass failed, retried in the next")
                continue
            if outcome.deleted or outcome.protected:
                log.info(
                    "retention: %s deleted, %s kept for runs that need them",
                    plural(outcome.deleted, "run"),
                    plural(outcome.protected, "run"),
                )

    async def _sleep(self, seconds: float) -> None:
        until = self._clock.now() + timedelta(seconds=seconds)
        while self._clock.now() < until:
            await self._clock.sleep_until(until)
