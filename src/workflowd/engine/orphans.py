"""Jobs that may still run although their task ended (the jobs system stopped answering while
the job ran, refused to report on it, or workflowd hit an internal error): cancelled until the
jobs system confirms.

The task's end commits the job into the store's `jobs_to_cancel` in the same transaction, so the
promise survives a restart; `keep_cancelling` then retries in the background, with capped
backoff, until the cancel is confirmed (or the job is gone), and forgets it in the store.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

from workflowd.domain.jobs import JobNotFound, JobsError
from workflowd.domain.retry import Backoff
from workflowd.engine.ports import JobsPort, RunStore

log = logging.getLogger("workflowd.engine")

# Exponential from 1 s to a minute, each delay drawn from its upper half: orphans of one outage
# do not all ask again in the same instant.
_BACKOFF = Backoff(1.0, max_delay_s=60.0, spread=0.5)
_ATTEMPT_DEADLINE_S = 10.0


class OrphanJobs:
    def __init__(self, store: RunStore, jobs: JobsPort) -> None:
        self._store = store
        self._jobs = jobs
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def resume(self) -> int:
        """Carry on with the cancels an earlier process had not seen confirmed."""
        remembered = await self._store.jobs_to_cancel()
        for job_id, company in remembered:
            self.keep_cancelling(job_id, company)
        return len(remembered)

    def keep_cancelling(self, job_id: str, company: str) -> None:
        if self._closed or job_id in self._tasks:
            return
        cancel = self._cancel_until_confirmed(job_id, company)
        # A context of its own: it outlives the task instance whose commit started it.
        task = asyncio.create_task(cancel, name=f"cancel-{job_id}", context=contextvars.Context())
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def aclose(self) -> None:
        """Stop retrying; what is not confirmed stays in the store for the next start."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _cancel_until_confirmed(self, job_id: str, company: str) -> None:
        delays = _BACKOFF.delays()
        while True:
            try:
                info = await self._jobs.cancel(
                    job_id, company, retry_deadline_s=_ATTEMPT_DEADLINE_S
                )
            except JobNotFound:
                log.info("job %s to cancel is gone", job_id, extra={"job_id": job_id})
                break
            except JobsError as exc:
                log.warning("cancel of job %s not confirmed yet: %s", job_id, exc)
            else:
                log.info(
                    "job %s cancelled after its task ended (%s)", job_id, info.state,
                    extra={"job_id": job_id},
                )  # fmt: skip
                break
            await asyncio.sleep(delays.next())  # ok: retry backoff
        await self._store.job_cancel_confirmed(job_id)
