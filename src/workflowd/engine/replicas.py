"""This process as one of several replicas sharing one store (PostgreSQL).

A replica joins with a lease and renews it every third of the lease time. On each renewal it
also adopts the active runs of replicas whose lease ran out (their process died, or stopped
renewing): it claims them in the store, which hands each run to one replica only, and resumes
them exactly as a restart resumes its own runs (re-attaching to the running job, or submitting
with the same idempotency key, so never a second job). A replica that finds its own lease ran
out stops: another may already execute its runs, and two executors of one run must never race.

It also follows the shared event log (woken by the store's notifications, and at least every
`poll_s` in case one was missed) and delivers every event, its own included, to its watchers in
log order; from the log it learns what other replicas did to its runs (a cancel) and which runs
ended that one of its runs waits for.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from workflowd.domain.run import RunEvent, RunEventType
from workflowd.domain.units import plural
from workflowd.engine.deps import EngineDeps
from workflowd.engine.runs import Runs

log = logging.getLogger("workflowd.engine")

_LOG_BATCH = 1000
_RETRY_S = 1.0

WaitForEvents = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    lease_s: float = 15.0
    # How long the follower waits for a notification before it reads the log anyway.
    poll_s: float = 1.0


class Replica:
    def __init__(
        self,
        deps: EngineDeps,
        runs: Runs,
        settings: ReplicaSettings,
        wait_for_events: WaitForEvents,
        refresh_schedules: Callable[[], Awaitable[None]],
        lost: Callable[[str], None],
    ) -> None:
        self.id = str(uuid.uuid4())
        self._deps = deps
        self._runs = runs
        self._settings = settings
        self._wait_for_events = wait_for_events
        self._refresh_schedules = refresh_schedules
        self._lost = lost
        self._last_seq = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._joined = False

    @property
    def _lease(self) -> timedelta:
        return timedelta(seconds=self._settings.lease_s)

    async def start(self) -> int:
        """Join, claim the runs no live replica owns, and follow the log; returns how many runs
        were claimed."""
        now = self._deps.clock.now()
        await self._deps.store.join(self.id, now, self._lease)
        self._joined = True
        # The log is followed from here, before anything is claimed: no event is missed.
        self._last_seq = await self._deps.store.log_position()
        self._deps.hub.follow_log()
        self._runs.launcher.share()
        claimed = await self._runs.recover(takeover=False)
        self._tasks = [
            asyncio.create_task(self._keep_lease(), name="replica-lease"),
            asyncio.create_task(self._follow(), name="replica-follow"),
        ]
        log.info(
            "replica %s joined (lease %.0f s), %s claimed",
            self.id,
            self._settings.lease_s,
            plural(claimed, "run"),
        )
        return claimed

    async def aclose(self) -> None:
        """Stop renewing and following; after the runs have drained, `leave`."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def leave(self) -> None:
        """End the lease at once: the other replicas adopt this one's runs on their next
        renewal instead of after the lease time."""
        if self._joined:
            await self._deps.store.leave(self._deps.clock.now())

    async def _keep_lease(self) -> None:
        every = self._settings.lease_s / 3
        renewed = self._deps.clock.now()
        while True:
            await asyncio.sleep(every)
            now = self._deps.clock.now()
            try:
                held = await self._deps.store.renew(now, self._lease)
            except Exception as exc:
                if now - renewed < self._lease:
                    log.warning("replica %s could not renew its lease: %s", self.id, exc)
                    continue
                held = False
            if not held:
                self._lost(
                    f"replica {self.id} lost its lease (not renewed for"
                    f" {self._settings.lease_s:.0f} s): its runs may be adopted elsewhere"
                )
                return
            renewed = now
            try:
                await self._runs.recover(takeover=False)
                # Cancels a dead replica had not seen confirmed are carried on here (a job
                # cancelled twice is cancelled once).
                await self._deps.orphans.resume()
                await self._refresh_schedules()
            except Exception:
                log.exception("replica %s could not adopt runs or read schedules", self.id)

    async def _follow(self) -> None:
        while True:
            try:
                await self._wait_for_events(self._settings.poll_s)
                while True:
                    entries = await self._deps.store.events_since(self._last_seq, _LOG_BATCH)
                    if entries:
                        self._last_seq = entries[-1][0]
                        self._deliver([event for _, event in entries])
                    if len(entries) < _LOG_BATCH:
                        break
            except Exception:
                log.exception("replica %s could not read the event log; retrying", self.id)
                await asyncio.sleep(_RETRY_S)

    def _deliver(self, events: list[RunEvent]) -> None:
        self._deps.hub.deliver(events)
        launcher = self._runs.launcher
        for event in events:
            # A cancel asked of another replica reaches the run's executor here (one of this
            # replica's own cancels arrives twice, which changes nothing).
            if event.type == RunEventType.RUN_CANCELLING:
                launcher.request_cancel(event.run_id, event.reason)
            elif event.terminal:
                launcher.ended(event.run_id)
