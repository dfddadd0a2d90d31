"""A run executor's commits: what the interpreter decided and is not committed yet, committed
with the cursor in one change of the run (`records.change`), tried again while the store
refuses writes, and published once the store took it (the hub, metrics, traces, log lines);
and the run's end when the executor hits an internal error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import datetime

from workflowd.domain.errors import Unavailable
from workflowd.domain.retry import Backoff
from workflowd.domain.run import ErrorType, Problem, Run, RunEvent, RunStatus
from workflowd.engine import records
from workflowd.engine.calls import CallRunner, CallState
from workflowd.engine.cursor import Cursor, to_json
from workflowd.engine.deps import EngineDeps
from workflowd.engine.flow import Ended, Record, RunEnd, Started
from workflowd.engine.ports import RunTransaction
from workflowd.engine.problems import with_note
from workflowd.engine.tracing import RunTrace

log = logging.getLogger("workflowd.engine")

# A store that refuses writes (a full disk, a database restarting) is tried again with this
# backoff until it takes them: a run goes on once the store does, it never gives up.
_STORE_BACKOFF = Backoff(0.1, max_delay_s=10.0, spread=0.5)


class Commits:
    def __init__(self, deps: EngineDeps, run: Run, trace: RunTrace) -> None:
        self._deps = deps
        self._run = run
        self._trace = trace
        self.decided: list[Record] = []
        self.intents: list[CallState] = []
        self.starting: datetime | None = None
        """The run's start, carried by its first change (with the first decisions) rather than
        committed on its own: nothing is sent before that change, so a crash before it leaves
        a run that was never started."""
        self._aside: set[asyncio.Future[list[RunEvent]]] = set()
        self._started: dict[str, datetime] = {
            t.key: t.started_at for t in run.tasks if t.started_at is not None
        }

    @property
    def waiting(self) -> bool:
        """Something was decided that is not committed yet."""
        return bool(self.decided or self.intents or self.starting)

    async def flush(
        self, cursor: Cursor, calls: Mapping[str, CallState], end: RunEnd | None = None
    ) -> None:
        """Commit what was decided, with the cursor (the executor's gate is held)."""
        found, self.decided = self.decided, []
        intents, self.intents = self.intents, []
        starting, self.starting = self.starting, None
        if starting is not None:
            self._trace.start(starting)
        now = self._deps.clock.now()
        change = records.change(found, intents, calls, to_json(cursor), end, now, starting)
        try:
            await self.commit(change)
        except BaseException:
            self.decided[:0], self.intents[:0] = found, intents
            self.starting = starting
            raise
        for state in calls.values():
            if state.unconfirmed and state.job_id:
                state.unconfirmed = False
                self._deps.orphans.keep_cancelling(state.job_id, self._run.company)
        self._observe(found)
        self._trace.records(found, calls)

    async def commit(self, change: records.Change) -> None:
        """One commit, tried again while the store refuses writes (a full disk …)."""
        delays = _STORE_BACKOFF.delays()
        warned = False
        while True:
            future = self._deps.store.update_run(self._run.id, self._deps.clock.now(), change)
            future.add_done_callback(self._published)
            try:
                await asyncio.shield(future)
                return
            except Unavailable as exc:
                if not warned:
                    log.warning(
                        "run %s: the store refused a change (%s); trying again until it takes it",
                        self._run.id, exc, extra={"run_id": self._run.id},
                    )  # fmt: skip
                    warned = True
            await asyncio.sleep(delays.next())  # ok: backoff while the store refuses writes

    def aside(self, change: records.Change) -> None:
        """A commit the executor does not wait for (a job's id, for watchers)."""
        future = self._deps.store.update_run(self._run.id, self._deps.clock.now(), change)
        future.add_done_callback(self._published)
        self._aside.add(future)
        future.add_done_callback(self._aside.discard)

    async def abort(self, exc: Exception, calls: CallRunner | None) -> None:
        """An internal error ends the run FAILED (its steps are stopped): every job in flight is
        cancelled, and every instance still running fails with the problem."""
        problem = Problem.of(
            ErrorType.RUNTIME, "workflowd hit an internal error", f"{type(exc).__name__}: {exc}"
        )
        notes: list[str] = []
        if calls is not None:
            for state in calls.states.values():
                with contextlib.suppress(Exception):
                    if note := await calls.cancel_job(state):
                        notes.append(note)
        if notes:
            problem = with_note(problem, "; ".join(notes))
        now = self._deps.clock.now()
        states = [] if calls is None else list(calls.states.values())
        jobs = [(state.job_id, state.key) for state in states if state.unconfirmed]
        job_ids = {state.key: state.job_id for state in states if state.job_id}

        def change(tx: RunTransaction) -> None:
            for job_id, key in jobs:
                tx.cancel_job_later(job_id, key)
            tx.fail_running_instances(now, problem, job_ids)
            if not tx.run_status.terminal:
                tx.end_run(RunStatus.FAILED, now, problem=problem)

        try:
            await self.commit(change)
        except Exception:
            log.exception("run %s: recording the internal error failed too", self._run.id)
            return
        for job_id, _ in jobs:
            self._deps.orphans.keep_cancelling(job_id, self._run.company)

    def _published(self, future: asyncio.Future[list[RunEvent]]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        events = future.result()
        self._deps.hub.publish(events)
        self._deps.metrics.observe_events(events, self._run)
        self._trace.events(events)
        records.log_events(events)

    def _observe(self, found: list[Record]) -> None:
        """Each task instance's time, from its start to its end, by operation (or kind)."""
        for record in found:
            if isinstance(record, Started):
                self._started[record.key] = record.at
            elif isinstance(record, Ended) and record.key in self._started:
                took = (record.at - self._started.pop(record.key)).total_seconds()
                labels = (record.task.call, record.status.value)
                self._deps.metrics.task_duration.labels(*labels).observe(max(took, 0.0))
