"""Running one job on a worker thread: start, effect, completion, cancellation, time-out.

A job's effect and its `completed` record commit in one transaction, so a crash leaves either
nothing (the job is still `running` and runs again after restart) or a completed job. Cancel
marks the job under the journal lock and interrupts its cursor; the runner checks the mark
under the same lock before committing, so a cancelled job never takes effect even if no
interrupt landed. A job over its time limit is marked and interrupted the same way, and
fails with a message naming the limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import duckdb

from dataplane import effects, store
from dataplane.catalog import IdAllocator
from dataplane.errors import JobFailure, NotFound, readable
from dataplane.journal import Journal, rollback
from dataplane.model import Failure, Job, JobState, now_iso

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 5  # DuckDB is optimistic: concurrent writers to one table can conflict


class Runner:
    def __init__(
        self,
        journal: Journal,
        ids: IdAllocator,
        cursor: Callable[[], duckdb.DuckDBPyConnection],
        timeout_s: float,
    ) -> None:
        self._journal = journal
        self._ids = ids
        self._cursor = cursor
        self._timeout_s = timeout_s
        self._running: dict[str, duckdb.DuckDBPyConnection] = {}
        self._cancel_requested: set[str] = set()
        self._timed_out: set[str] = set()
        self._closing = False

    def run(self, job_id: str) -> None:
        cur = self._cursor()
        job = self._start(cur, job_id)
        if job is None:
            return
        try:
            self._run_attempts(cur, job)
        finally:
            with self._journal.lock:
                self._running.pop(job_id, None)
                self._cancel_requested.discard(job_id)
                self._timed_out.discard(job_id)

    def cancel(self, cur: duckdb.DuckDBPyConnection, job_id: str) -> Job:
        with self._journal.lock:
            found = store.get_job(cur, job_id)
            if found is None:
                raise NotFound(f"no job {job_id}")
            job = found[0]
            running = self._running.get(job_id)
            if job.state is JobState.PENDING or (job.state is JobState.RUNNING and not running):
                job = job.moved_to(JobState.CANCELLED)
                self._journal.commit(cur, job)
            elif job.state is JobState.RUNNING and running is not None:
                job = job.moved_to(JobState.PENDING_CANCELLATION)
                self._journal.commit(cur, job)
                self._cancel_requested.add(job_id)
            return job

    def time_out(self, job_id: str) -> bool:
        """Marks a running job as over its time limit; True if it is to be interrupted."""
        with self._journal.lock:
            if job_id not in self._running or job_id in self._cancel_requested:
                return False
            self._timed_out.add(job_id)
            return True

    def interrupt_if_stopping(self, job_id: str) -> bool:
        """Interrupts the query of a job being cancelled or timed out again; False once the
        job has stopped running.

        DuckDB drops an interrupt that arrives between two statements, so cancel, time-out
        and close repeat it until the job ends. Never blocks: the event loop calls this."""
        return self._interrupt(
            lambda: (
                [job_id] if job_id in self._cancel_requested or job_id in self._timed_out else []
            )
        )

    def close(self) -> bool:
        """Stops taking jobs and interrupts the running ones without changing their records
        (they run again on restart). False once nothing is running any more."""
        self._closing = True
        return self._interrupt(lambda: list(self._running))

    def _interrupt(self, targets: Callable[[], list[str]]) -> bool:
        if not self._journal.lock.acquire(blocking=False):
            return True
        try:
            cursors = [self._running[i] for i in targets() if i in self._running]
            for cur in cursors:
                cur.interrupt()
            return bool(cursors)
        finally:
            self._journal.lock.release()

    def _start(self, cur: duckdb.DuckDBPyConnection, job_id: str) -> Job | None:
        with self._journal.lock:
            found = store.get_job(cur, job_id)
            if self._closing or found is None:
                return None
            job = found[0]
            if job.state is JobState.PENDING:
                job = job.moved_to(JobState.RUNNING)
                self._journal.commit(cur, job)
            elif job.state is not JobState.RUNNING:
                return None
            self._running[job_id] = cur
            return job

    def _run_attempts(self, cur: duckdb.DuckDBPyConnection, job: Job) -> None:
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                self._attempt(cur, job)
                return
            except duckdb.TransactionException as exc:
                rollback(cur)
                if attempt == _MAX_ATTEMPTS:
                    self._finish(cur, job, JobState.FAILED, str(exc))
                log.debug("job %s conflicted (attempt %d): %s", job.job_id, attempt, exc)

    def _attempt(self, cur: duckdb.DuckDBPyConnection, job: Job) -> None:
        cur.execute("BEGIN")
        try:
            result = effects.run(cur, job, self._ids)
        except duckdb.InterruptException:
            rollback(cur)
            self._interrupted(cur, job)
            return
        except duckdb.TransactionException:
            raise
        except (JobFailure, duckdb.Error) as exc:
            rollback(cur)
            self._finish(cur, job, JobState.FAILED, str(exc))
            return
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job.job_id)
            rollback(cur)
            self._finish(cur, job, JobState.FAILED, f"internal error: {exc}")
            return
        with self._journal.lock:
            if job.job_id in self._cancel_requested:
                rollback(cur)
                self._commit_cancelled(cur, job)
                return
            done = job.moved_to(JobState.COMPLETED, result=result)
            self._journal.commit(cur, done, in_transaction=True)

    def _interrupted(self, cur: duckdb.DuckDBPyConnection, job: Job) -> None:
        with self._journal.lock:
            if job.job_id in self._cancel_requested:
                self._commit_cancelled(cur, job)
                return
            if self._closing:
                return
        if job.job_id in self._timed_out:
            message = (
                f"the job ran longer than its time limit of {self._timeout_s:g} s and was"
                " stopped (the data plane's job_timeout_s, --job-timeout-s)"
            )
        else:
            message = "the query was interrupted"
        self._finish(cur, job, JobState.FAILED, message)

    def _commit_cancelled(self, cur: duckdb.DuckDBPyConnection, job: Job) -> None:
        found = store.get_job(cur, job.job_id)
        current = found[0] if found else job
        self._journal.commit(cur, current.moved_to(JobState.CANCELLED))

    def _finish(
        self, cur: duckdb.DuckDBPyConnection, job: Job, state: JobState, message: str
    ) -> None:
        failure = Failure(message=readable(message), timestamp=now_iso(), value={})
        with self._journal.lock:
            if job.job_id in self._cancel_requested:
                self._commit_cancelled(cur, job)
                return
            self._journal.commit(cur, job.moved_to(state, failure=failure))
