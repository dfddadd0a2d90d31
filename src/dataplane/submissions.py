"""Group commit of job submissions: what arrives while one batch commits is committed together
in the next, in one transaction.

A writer task on the event loop drains the waiting submissions and hands them to a thread. A
lone submission commits at once; under load each commit carries everything that arrived during
the previous one, so submitting is not bound by one commit per job.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable, Sequence

from dataplane import store
from dataplane.errors import Conflict, quote
from dataplane.journal import Journal
from dataplane.model import Job, JobState, Submission, now_iso

# One transaction carries at most this many submissions; more wait for the next commit.
MAX_BATCH = 256

Outcome = tuple[Job, bool] | Conflict


class Submissions:
    def __init__(
        self,
        journal: Journal,
        on_thread: Callable[[Callable[[], list[Outcome]]], Awaitable[list[Outcome]]],
        created: Callable[[list[str]], None],
    ) -> None:
        self._journal = journal
        self._on_thread = on_thread
        self._created = created
        self._waiting: list[tuple[Submission, asyncio.Future[tuple[Job, bool]]]] = []
        self._writer: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Submissions waiting for the next group commit."""
        return len(self._waiting)

    async def submit(self, submission: Submission) -> tuple[Job, bool]:
        """The new job and True, or the job already submitted under the key and False."""
        future: asyncio.Future[tuple[Job, bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((submission, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="dataplane-submissions")
        return await future

    async def _write(self) -> None:
        while self._waiting:
            batch = self._waiting[:MAX_BATCH]
            del self._waiting[:MAX_BATCH]
            try:
                commit = functools.partial(self._commit, [s for s, _ in batch])
                outcomes = await self._on_thread(commit)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self._created([o[0].job_id for o in outcomes if not isinstance(o, Conflict) and o[1]])
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # the client went away; its job stands
                    continue
                if isinstance(outcome, Conflict):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        for _, future in self._waiting:
            future.cancel()

    def _commit(self, submissions: Sequence[Submission]) -> list[Outcome]:
        with self._journal.lock:
            keys = [s.idempotency_key for s in submissions if s.idempotency_key is not None]
            known = store.find_by_keys(self._journal.db, keys)
            outcomes: list[Outcome] = []
            jobs: list[Job] = []
            digests: list[str] = []
            for submission in submissions:
                key = submission.idempotency_key
                found = known.get(key) if key is not None else None
                if found is not None:
                    outcomes.append(_replay(submission, *found))
                    continue
                job = _new_job(submission)
                jobs.append(job)
                digests.append(submission.digest)
                outcomes.append((job, True))
                if key is not None:  # the same key again in this batch finds this job
                    known[key] = (job, submission.digest)
            self._journal.commit(jobs, digests=digests)
            return outcomes


def _replay(submission: Submission, job: Job, digest: str) -> Outcome:
    if digest != submission.digest:
        return Conflict(
            f"idempotency_key {quote(submission.idempotency_key or '')} was used with a"
            " different request body"
        )
    return job, False


def _new_job(submission: Submission) -> Job:
    stamp = now_iso()
    return Job(
        job_id=str(uuid.uuid4()),
        type=submission.type,
        state=JobState.PENDING,
        input=submission.input,
        idempotency_key=submission.idempotency_key,
        tags=submission.tags,
        metadata=submission.metadata,
        created_at=stamp,
        updated_at=stamp,
        traceparent=submission.traceparent,
    )
