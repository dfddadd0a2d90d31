"""Starts, tracks and stops the executors of this process's runs.

A run created with `after_run_id` (a buffered or cancel-other fire, a backfill chain) waits
until that run's executor has ended, then starts; it is read again from the store at that
moment, since it may have been cancelled while it waited. Among replicas, the run it waits
for may execute on another one: it then waits until the store or the shared event log says
that run has ended (`ended`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import defaultdict

from workflowd.domain.definition import WorkflowDefinition
from workflowd.domain.fairness import acting_for
from workflowd.domain.run import Run, RunStatus
from workflowd.engine.definitions import Definitions, WorkflowRef
from workflowd.engine.deps import EngineDeps
from workflowd.engine.executor import RunExecutor

log = logging.getLogger("workflowd.engine")


class Launcher:
    def __init__(self, deps: EngineDeps, definitions: Definitions) -> None:
        self._deps = deps
        self._definitions = definitions
        self._executors: dict[str, tuple[RunExecutor, asyncio.Task[None]]] = {}
        self._waiters: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
        self._waiting: set[str] = set()
        # Released from waiting, being read again before they start.
        self._releasing: set[str] = set()
        self._releases: set[asyncio.Task[None]] = set()
        # Runs found active at start whose executors are not started yet, and the cancels
        # that arrived for them meanwhile.
        self._expected: set[str] = set()
        self._early_cancels: dict[str, str] = {}
        self._draining = False
        self._shared = False
        self._checks: set[asyncio.Task[None]] = set()

    def share(self) -> None:
        """Other replicas execute runs on the same store: a run may wait for one of theirs."""
        self._shared = True

    @property
    def draining(self) -> bool:
        return self._draining

    def running(self, run_id: str) -> bool:
        return run_id in self._executors

    def _live(self, run_id: str) -> bool:
        """The run is executing, waiting to, or about to be resumed."""
        return run_id in self._executors or run_id in self._waiting or run_id in self._expected

    def expect(self, run_ids: list[str]) -> None:
        """These runs will be started shortly (resumed after a restart)."""
        self._expected.update(run_ids)

    def start(self, run: Run, definition: WorkflowDefinition, waited: bool = False) -> None:
        """Start the run's executor now, or once the run it waits for has ended (`waited`: it
        has)."""
        if self._draining or run.id in self._executors or run.id in self._waiting:
            return  # a draining daemon leaves it stored as it is: the next start resumes it
        self._expected.discard(run.id)
        after = run.after_run_id
        stopping = run.status == RunStatus.CANCELLING or run.id in self._early_cancels
        # A run asked to stop does not wait: it starts at once, to end CANCELLED.
        if after and not waited and not stopping and (self._shared or self._live(after)):
            self._waiters[after].append((run.company, run.id))
            self._waiting.add(run.id)
            if not self._live(after):
                self._check_ended(after)
            return
        executor = RunExecutor(self._deps, run, definition)
        early = self._early_cancels.pop(run.id, None)
        if early is not None:
            executor.request_cancel(early)
        # The executor acts for the run's company wherever companies take turns.
        context = contextvars.copy_context()
        context.run(acting_for.set, run.company)
        task = asyncio.create_task(executor.execute(), name=f"run-{run.id}", context=context)
        self._executors[run.id] = (executor, task)
        self._deps.metrics.active_runs.set(len(self._executors))
        task.add_done_callback(lambda t: self._reap(run.id, t))

    def request_cancel(self, run_id: str, reason: str) -> None:
        """Tell the run's executor; a waiting run starts at once, to end CANCELLED."""
        entry = self._executors.get(run_id)
        if entry is not None:
            entry[0].request_cancel(reason)
        elif run_id in self._expected or run_id in self._releasing:
            self._early_cancels[run_id] = reason
        elif run_id in self._waiting:
            for waiters in self._waiters.values():
                for company, waiting_id in list(waiters):
                    if waiting_id == run_id:
                        waiters.remove((company, waiting_id))
                        self._release_one(company, run_id)

    def ended(self, run_id: str) -> None:
        """The run has ended (here or on another replica): start the runs waiting for it."""
        for company, waiting_id in self._waiters.pop(run_id, []):
            self._release_one(company, waiting_id)

    def _check_ended(self, run_id: str) -> None:
        """Registered as waiting first, then read: an end the log delivers meanwhile is kept."""

        async def check() -> None:
            try:
                found = await self._deps.store.runs_by_id([run_id])
            except Exception:
                log.exception("could not read run %s, which another run waits for", run_id)
                return
            if not found or found[0].status.terminal:
                self.ended(run_id)

        task = asyncio.create_task(check(), name=f"check-{run_id}")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    def refuse_new(self) -> None:
        self._draining = True

    async def drain(self) -> None:
        """Stop every executor without touching stored state: a restart resumes them."""
        self.refuse_new()
        tasks = [task for _, task in self._executors.values()]
        tasks += [*self._releases, *self._checks]
        for task in tasks:
            task.cancel("workflowd is draining")
        await asyncio.gather(*tasks, return_exceptions=True)

    def _reap(self, run_id: str, task: asyncio.Task[None]) -> None:
        entry = self._executors.pop(run_id, None)
        self._deps.metrics.active_runs.set(len(self._executors))
        if task.cancelled():
            return  # drained: the waiters stay stored and resume with it after a restart
        if entry is not None and entry[0].taken:
            return  # it goes on with another replica, whose end releases the waiters
        exc = task.exception()
        if exc is not None:
            log.error(
                "run %s stopped on an unexpected error", run_id, exc_info=exc,
                extra={"run_id": run_id},
            )  # fmt: skip
        self.ended(run_id)

    def _release_one(self, company: str, run_id: str) -> None:
        self._waiting.discard(run_id)
        self._releasing.add(run_id)
        task = asyncio.create_task(self._release(company, run_id), name=f"release-{run_id}")
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, company: str, run_id: str) -> None:
        acting_for.set(company)
        try:
            run = await self._deps.store.get_run(company, run_id)
            workflow = await self._definitions.head(
                company, WorkflowRef(workflow_id=run.workflow_id, version=run.version)
            )
            definition = await self._definitions.definition_of(workflow)
        except Exception:
            log.exception("run %s could not start after the run it waited for", run_id)
            self._releasing.discard(run_id)
            self._early_cancels.pop(run_id, None)
            return
        self._releasing.discard(run_id)
        if run.status.terminal:
            self._early_cancels.pop(run_id, None)
        else:
            self.start(run, definition, waited=True)
