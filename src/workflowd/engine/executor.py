"""The life of one run: the interpreter decides, the executor does (docs/architecture.md).

    execute ─ start or resume ─┬─ await the next outcome ─ advance the cursor ─ apply ─┐
                                └──────────────────── until the run's end ◄─────────────┘

The interpreter (`interpreter.py`) is a pure function of the cursor and a step's outcome. The
executor runs the steps it asks for, concurrently (expressions in the evaluator's workers,
calls' jobs in the jobs system, sleeps on the clock), feeds each outcome back, and commits the
task instances' changes with the cursor (through `commits.py`), deciding when:

- a call's intent (its exact job request) is committed before the job is submitted, with every
  change before it: between one job's end and the next job's submission there is one commit;
- a sleep's wake-up instant is committed before the sleep begins;
- when no step but jobs and sleeps is in flight, what was decided meanwhile is committed;
- the run's end is one commit with its last changes.

The cursor is never committed ahead of the changes that brought it there: a restart resumes
from the last committed cursor, starts its expressions again, re-attaches to its jobs (or
submits a committed intent again under its idempotency key, finding the job that may exist),
and keeps its sleeps' instants. A step the interpreter cancels has its job cancelled first, and
its instance says whether the jobs system confirmed it; an unconfirmed cancel is committed into
`jobs_to_cancel` and retried in the background (`OrphanJobs`), across restarts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from workflowd.domain.definition import WorkflowDefinition
from workflowd.domain.run import (
    Run,
    RunStatus,
    RunTaken,
    TaskRun,
    TaskStatus,
)
from workflowd.engine.calls import JOB_ID_RECORD_DELAY_S, CallRunner, CallState
from workflowd.engine.commits import Commits
from workflowd.engine.cursor import Cursor, from_json
from workflowd.engine.dataflow import DataFlow
from workflowd.engine.deps import EngineDeps
from workflowd.engine.flow import (
    Advance,
    CallStep,
    Ended,
    Evaluate,
    Evaluated,
    Faulted,
    Outcome,
    Record,
    RunEnd,
    Sleep,
    Step,
    Stopped,
    TimedOut,
    Woke,
)
from workflowd.engine.interpreter import Interpreter
from workflowd.engine.legacy import legacy_cursor
from workflowd.engine.problems import StepFailed, with_note
from workflowd.engine.reruns import replayed

log = logging.getLogger("workflowd.engine")


@dataclass(slots=True)
class _Running:
    step: Step
    task: asyncio.Task[None]
    settled: bool
    """Nothing more is decided until it ends (a job submitted, a sleep): when every step in
    flight is settled, what was decided meanwhile is committed."""


class RunExecutor:
    def __init__(self, deps: EngineDeps, run: Run, definition: WorkflowDefinition) -> None:
        self._deps = deps
        self._run = run
        self._definition = definition
        self._interpreter = Interpreter(definition, deps.limits.flow)
        self._outcomes: asyncio.Queue[Outcome | _Settled | _Broken] = asyncio.Queue()
        self._cancel_reason = run.cancel_reason or "cancelled on request"
        self._cancel_requested = run.status == RunStatus.CANCELLING
        self._cursor: Cursor | None = None
        self._running: dict[str, _Running] = {}
        self._gate = asyncio.Lock()
        self._deadline: asyncio.Task[None] | None = None
        self._deadline_at: tuple[Any, datetime] | None = None
        self._calls: CallRunner | None = None
        self._replay: dict[str, TaskRun] = {}
        self._trace = deps.tracing.run(run)
        self._commits = Commits(deps, run, self._trace)
        self.taken = False

    @property
    def run_id(self) -> str:
        return self._run.id

    def request_cancel(self, reason: str) -> None:
        if self._cancel_requested:
            return
        self._cancel_requested = True
        self._cancel_reason = reason
        if self._calls is not None:
            self._calls.stopping = True
        self._outcomes.put_nowait(Stopped(reason))

    async def execute(self) -> None:
        try:
            await self._execute()
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except RunTaken as exc:
            # Adopted by another replica while this one's lease had run out: the run goes on
            # there, and nothing more is written or cancelled from here.
            log.warning("run %s: %s; stopping here", self.run_id, exc, extra=self._log())
            self.taken = True
        except Exception as exc:
            # A bug must not leave the run active forever, nor its jobs running unwatched.
            log.exception(
                "run %s of %s failed on an internal error", self.run_id, self._workflow(),
                extra={**self._log(), "title": "workflowd hit an internal error"},
            )  # fmt: skip
            await self._stop_steps()
            await self._commits.abort(exc, self._calls)
        finally:
            await self._stop_steps()

    # --- start, resume, loop ------------------------------------------------------------------

    async def _execute(self) -> None:
        started_at = await self._start_run()
        if started_at is None:
            return
        flow = DataFlow(self._deps, self._run, self._definition, started_at)
        self._calls = CallRunner(self._deps, self._run.id, self._run.company, flow)
        self._calls.stopping = self._cancel_requested
        self._calls.replay = self._replay = await self._replayed()
        self._flow = flow
        advance = self._resume()
        if self._cancel_requested:
            self._outcomes.put_nowait(Stopped(self._cancel_reason))
        if await self._apply(advance):
            return
        while True:
            await self._commit_if_settled()
            outcome = await self._outcomes.get()
            if isinstance(outcome, _Settled):
                continue
            if isinstance(outcome, _Broken):
                raise outcome.exc
            assert self._cursor is not None
            advance = self._interpreter.advance(self._cursor, outcome, self._deps.clock.now())
            # A run or a task that must stop waits (a while) for its jobs to stop, so that
            # CANCELLED or a timeout means they did; branches that lost only cancel theirs.
            grace = (
                self._deps.limits.cancel_grace_s if isinstance(outcome, Stopped | TimedOut) else 0.0
            )
            if await self._apply(advance, grace):
                return

    async def _start_run(self) -> datetime | None:
        """The run's start instant (recorded now unless an earlier process did); None when it
        was cancelled before it ever started."""
        if self._run.started_at is not None:
            return self._run.started_at
        now = self._deps.clock.now()
        if self._cancel_requested:
            reason = self._cancel_reason
            await self._commits.commit(
                lambda tx: tx.end_run(RunStatus.CANCELLED, now, reason=reason)
            )
            return None

        self._commits.starting = now
        return now

    async def _replayed(self) -> dict[str, TaskRun]:
        """A re-run's instances of the run it re-runs, up to where it goes live."""
        run = self._run
        if not run.rerun_of or not run.replay_until:
            return {}
        original = await self._deps.store.get_run(run.company, run.rerun_of)
        return replayed(original, run.replay_until)

    def _resume(self) -> Advance:
        """Where the run starts: its committed cursor and the steps it awaits, a cursor rebuilt
        for a run started before task instances, or the beginning."""
        assert self._calls is not None
        now = self._deps.clock.now()
        for task_run in self._run.tasks:
            if task_run.status == TaskStatus.RUNNING and task_run.kind == "call":
                task = self._definition.task(task_run.reference)
                state = self._calls.state(task_run.key, task)
                state.job_id, state.resumed = task_run.job_id, True
                state.job_recorded = bool(task_run.job_id)
        if self._run.cursor is not None:
            cursor = from_json(self._run.cursor)
            return Advance(cursor, steps=self._interpreter.in_flight(cursor))
        if self._run.tasks:
            return self._interpreter.enter(legacy_cursor(self._run, self._definition), now)
        return self._interpreter.start(self._run.input, now)

    async def _apply(self, advance: Advance, grace_s: float = 0.0) -> bool:
        """Carry out a decision; True when the run has ended."""
        async with self._gate:
            self._cursor = advance.cursor
            found = advance.records
            if advance.cancels:
                found = await self._cancel_steps(advance.cancels, found, grace_s)
            self._commits.decided += found
            for step in advance.steps:
                self._launch(step)
            if advance.end is not None:
                await self._end(advance.end)
                return True
        self._arm_deadline()
        return False

    # --- steps --------------------------------------------------------------------------------

    def _launch(self, step: Step) -> None:
        if isinstance(step, Evaluate):
            work: Coroutine[Any, Any, Outcome] = self._evaluate(step)
        elif isinstance(step, CallStep):
            work = self._call(step)
        else:
            work = self._sleep(step)
        task = asyncio.create_task(self._report(step.key, work), name=f"step-{step.key}")
        self._running[step.key] = _Running(step, task, settled=False)

    async def _report(self, key: str, work: Coroutine[Any, Any, Outcome]) -> None:
        """The step's outcome, into the loop's queue; an exception a step must not raise (a
        bug, the run taken by another replica) is raised by the loop."""
        outcome: Outcome | _Broken
        try:
            outcome = await work
        except Exception as exc:
            outcome = _Broken(exc)
        finally:
            self._running.pop(key, None)
        self._outcomes.put_nowait(outcome)

    async def _evaluate(self, step: Evaluate) -> Outcome:
        try:
            value = await self._flow.evaluate(step)
        except StepFailed as failure:
            return Faulted(step.key, failure.problem)
        return Evaluated(step.key, step.purpose, value)

    async def _call(self, step: CallStep) -> Outcome:
        assert self._calls is not None
        with self._trace.task(step.key):
            return await self._calls.run(step, self._commit_intent, self._submitted)

    async def _commit_intent(self, state: CallState) -> None:
        async with self._gate:
            self._commits.intents.append(state)
            await self._commit_pending()

    def _submitted(self, state: CallState) -> None:
        """The call's job exists: its id is recorded on the side shortly (for watchers), unless
        its end comes first and carries it; and the step now only waits."""
        key, job_id = state.key, state.job_id

        def record() -> None:
            if state.job_recorded or key not in self._running:
                return
            state.job_recorded = True
            self._commits.aside(lambda tx: tx.record_job(key, job_id))

        asyncio.get_running_loop().call_later(JOB_ID_RECORD_DELAY_S, record)
        self._settle(key)

    async def _sleep(self, step: Sleep) -> Outcome:
        """Until the instant, which is committed first: a restart neither starts the wait again
        nor ends it early. A re-run replaying the wait (or the backoff) goes on at once."""
        if step.key in self._replay:
            return Woke(step.key)
        async with self._gate:
            await self._commit_pending()
        self._settle(step.key)
        clock = self._deps.clock
        while clock.now() < step.until:
            await clock.sleep_until(step.until)
        return Woke(step.key)

    def _settle(self, key: str) -> None:
        running = self._running.get(key)
        if running is not None:
            running.settled = True
            self._outcomes.put_nowait(_Settled())

    async def _cancel_steps(
        self, keys: list[str], found: list[Record], grace_s: float
    ) -> list[Record]:
        """Stop these steps; a call's job is cancelled and its instance's record says so."""
        assert self._calls is not None
        notes = await asyncio.gather(*(self._cancel_step(key, grace_s) for key in keys))
        said = {key: note for key, note in zip(keys, notes, strict=True) if note}
        return [
            _noted(r, said[r.key]) if isinstance(r, Ended) and r.key in said else r for r in found
        ]

    async def _cancel_step(self, key: str, grace_s: float) -> str:
        running = self._running.pop(key, None)
        if running is not None:
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)
        assert self._calls is not None
        state = self._calls.states.get(key)
        return "" if state is None else await self._calls.cancel_job(state, grace_s)

    async def _stop_steps(self) -> None:
        """Whatever still runs stops, leaving the stored state as it is (a drain)."""
        tasks = [running.task for running in self._running.values()]
        if self._deadline is not None:
            tasks.append(self._deadline)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _arm_deadline(self) -> None:
        """One timer, on the clock, for the deadline that comes first."""
        assert self._cursor is not None
        found = self._interpreter.next_deadline(self._cursor)
        at = None if found is None else self._interpreter.deadline_of(self._cursor, found)
        wanted = None if found is None or at is None else (found, at)
        if wanted == self._deadline_at:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._deadline_at = wanted
        if wanted is not None:
            self._deadline = asyncio.create_task(self._timer(*wanted), name="deadline")

    async def _timer(self, outcome: TimedOut, at: datetime) -> None:
        clock = self._deps.clock
        while clock.now() < at:
            await clock.sleep_until(at)
        self._deadline_at = None
        self._outcomes.put_nowait(outcome)

    # --- commits ------------------------------------------------------------------------------

    async def _commit_if_settled(self) -> None:
        if self._commits.waiting and all(r.settled for r in self._running.values()):
            async with self._gate:
                await self._commit_pending()

    async def _commit_pending(self, end: RunEnd | None = None) -> None:
        """Commit what was decided, with the cursor (the gate is held)."""
        assert self._cursor is not None
        assert self._calls is not None
        await self._commits.flush(self._cursor, self._calls.states, end)

    async def _end(self, end: RunEnd) -> None:
        await self._commit_pending(end)
        if end.status == RunStatus.FAILED and end.problem is not None:
            workflow, problem = self._workflow(), end.problem
            fields = {"task_ref": problem.instance, "title": problem.title}
            log.warning(
                "run %s of %s failed at %s: %s", self.run_id, workflow, problem.instance or "/",
                problem.title, extra={**self._log(), **fields},
            )  # fmt: skip

    def _log(self) -> dict[str, str]:
        return {"run_id": self.run_id, "workflow": self._workflow()}

    def _workflow(self) -> str:
        return f"{self._run.namespace}/{self._run.name}"


@dataclass(frozen=True, slots=True)
class _Settled:
    """Not an outcome: wakes the loop so that it commits once every step is settled."""


@dataclass(frozen=True, slots=True)
class _Broken:
    """Not an outcome: a step raised what no step may (a bug, or `RunTaken`)."""

    exc: Exception


def _noted(record: Ended, note: str) -> Ended:
    if record.problem is not None and record.status == TaskStatus.FAILED:
        return replace(record, problem=with_note(record.problem, note))
    reason = f"{record.reason}; {note}" if record.reason else note
    return replace(record, reason=reason)
