"""The runner of a `call` step: the task's intent (its exact job request) committed before
anything is sent, the job submitted (or found again after a restart), its end awaited, its
result mapped to the operation's output. And how a call that must stop stops: its job is
cancelled, and the task records whether the jobs system confirmed it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from workflowd.domain.definition import Task
from workflowd.domain.jobs import JobInfo, JobRequest, JobState
from workflowd.domain.run import RunStatus, TaskRun
from workflowd.engine import problems
from workflowd.engine.dataflow import DataFlow
from workflowd.engine.deps import EngineDeps
from workflowd.engine.flow import CallCompleted, CallStep, Faulted, Outcome, Stopped
from workflowd.engine.jobcalls import CancelOutcome, JobCalls
from workflowd.engine.problems import StepFailed
from workflowd.engine.reruns import replay_call

log = logging.getLogger("workflowd.engine")

# A job that ends this soon after its submission has its id recorded with its end (one commit);
# a longer one has it recorded on the side, for watchers.
JOB_ID_RECORD_DELAY_S = 0.02


@dataclass(slots=True)
class CallState:
    """What this process knows of one call instance's job."""

    key: str
    task: Task
    request: JobRequest | None = None
    job_id: str = ""
    job_recorded: bool = False
    resumed: bool = False
    """An earlier process started it: its intent may be committed, its job may exist."""
    submitting: asyncio.Task[JobInfo] | None = None
    unconfirmed: bool = False
    """Its job may still run: the jobs system did not confirm a cancel (`jobs_to_cancel`)."""
    reused: bool = False
    """A re-run replayed it: its outcome is the one it had in the run re-run."""


Intent = Callable[[CallState], Awaitable[None]]
"""Commits a call's intent (its request, with every change before it)."""


class CallRunner:
    def __init__(self, deps: EngineDeps, run_id: str, company: str, flow: DataFlow) -> None:
        self._deps = deps
        self._flow = flow
        self._jobs = JobCalls(deps, run_id, company)
        self.states: dict[str, CallState] = {}
        self.stopping = False
        """The run is being cancelled: nothing more is submitted."""
        self.replay: dict[str, TaskRun] = {}
        """A re-run's instances of the run it re-runs, which answer at once (`reruns.py`)."""

    def state(self, key: str, task: Task) -> CallState:
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = CallState(key, task)
        return state

    async def run(
        self, step: CallStep, commit_intent: Intent, on_submitted: Callable[[CallState], None]
    ) -> Outcome:
        state = self.state(step.key, step.task)
        replayed = self.replay.get(step.key)
        if replayed is not None and not state.job_id:
            state.reused, state.job_id, state.job_recorded = True, replayed.job_id, True
            return await replay_call(step.key, replayed)
        try:
            if not state.job_id:
                await self._intent(step, state, commit_intent)
                await self._submit(state)
                on_submitted(state)
            return await self._await_end(state)
        except StepFailed as failure:
            return Faulted(step.key, failure.problem)

    async def _intent(self, step: CallStep, state: CallState, commit: Intent) -> None:
        if state.request is not None:
            return
        if state.resumed:
            try:
                state.request = await self._flow.stored_request(step.task, step.key)
                return
            except StepFailed:
                state.resumed = False  # no intent was committed: it is made now
        self._flow.charge_input(step.task, step.input)
        state.request = await self._flow.request(step)
        await commit(state)
        self._deps.crash_point("after_intent_commit")

    async def _submit(self, state: CallState) -> None:
        assert state.request is not None
        while self.stopping:
            # A cancel starts nothing: the run's stop will cancel this step (and find a job an
            # earlier process may have submitted).
            await asyncio.Event().wait()
        submitting = asyncio.ensure_future(self._jobs.submit(state.task, state.request))
        state.submitting = submitting
        info = await asyncio.shield(submitting)
        state.submitting = None
        self._deps.crash_point("after_submit")
        state.job_id = info.job_id

    async def _await_end(self, state: CallState) -> Outcome:
        task, job_id = state.task, state.job_id
        began = asyncio.get_running_loop().time()
        try:
            info = await self._jobs.wait(task, job_id)
        except StepFailed as failure:
            if not failure.job_may_run:
                raise
            note = await self.cancel_job(state)
            raise StepFailed(problems.with_note(failure.problem, note)) from failure
        finally:
            waited = asyncio.get_running_loop().time() - began
            self._deps.metrics.job_wait.labels(task.call).observe(waited)
        self._deps.crash_point("after_job_completed")
        return self._ended(state, info)

    def _ended(self, state: CallState, info: JobInfo) -> Outcome:
        if info.state == JobState.COMPLETED:
            return CallCompleted(state.key, self._flow.output(state.task, info))
        problem = problems.job_failed(state.task, info)
        if info.state == JobState.CANCELLED:
            return Stopped(problem.title, problem, RunStatus.CANCELLED, key=state.key)
        return Faulted(state.key, problem)

    async def cancel_job(self, state: CallState, grace_s: float = 0.0) -> str:
        """Stop the call's job if it may exist, and say what became of it ("" when it never
        existed). With `grace_s`, a confirmed cancel is followed by waiting that long for the
        job to stop (a run that ends stops its jobs before it says so). An unconfirmed cancel
        leaves `state.unconfirmed` for the background."""
        if state.submitting is not None:
            await asyncio.gather(state.submitting, return_exceptions=True)
            done = state.submitting
            state.submitting = None
            if not done.cancelled() and done.exception() is None:
                state.job_id = done.result().job_id
        if not state.job_id and state.resumed:
            unknown = await self._find(state)
            if unknown:
                return unknown
        if not state.job_id:
            return ""
        outcome: CancelOutcome = await self._jobs.cancel(state.task, state.job_id)
        state.unconfirmed = not outcome.confirmed
        if outcome.confirmed and grace_s > 0 and not await self._stopped(state, grace_s):
            return f"{outcome.note}, but it did not stop within {grace_s:g} s"
        return outcome.note

    async def _stopped(self, state: CallState, grace_s: float) -> bool:
        try:
            async with asyncio.timeout(grace_s):
                await self._jobs.wait(state.task, state.job_id)
        except (TimeoutError, StepFailed):
            return False
        return True

    async def _find(self, state: CallState) -> str:
        """The job an earlier process may have submitted under the intent's key, into
        `state.job_id`; what stands in the way when it cannot be looked up ("" otherwise)."""
        if state.request is None:
            try:
                state.request = await self._flow.stored_request(state.task, state.key)
            except StepFailed:
                return ""  # no intent was committed: no job can exist
        try:
            found = await self._jobs.find(state.task, state.request.idempotency_key)
        except StepFailed as failure:
            return f"whether its job was submitted is unknown: {failure.problem.title}"
        if found is not None:
            state.job_id = found.job_id
        return ""
