"""Running jobs on a worker thread, several to a transaction: start, effects, completions,
cancellation, time-out.

A worker takes a batch of queued jobs and marks them `running` in one transaction. It then runs
their effects one after another in a shared transaction and commits their completions with it:
each job's effect and its `completed` record still commit together, so a crash leaves either
nothing of a job (it is still `running` and runs again after restart) or a completed job.

Only the first job of a transaction has a final outcome. The others are speculative: the
effects before them are not committed yet, so if a later job fails, conflicts or is
interrupted, the whole transaction rolls back, the jobs before it run again, and the job runs
first in a transaction of its own, where its failure means what it says. A speculative job
that runs longer than the batch window is interrupted ("evicted") the same way, so a slow job
never holds back the completions of the quick jobs batched before it, and the jobs after it go
back to the queue for other workers. A transaction takes no more jobs once it has been open
for the window.

Cancel marks the job under the journal lock; the runner checks the mark under the same lock
before committing, so a cancelled job never takes effect even if no interrupt landed. A job
over its time limit is marked and interrupted the same way, and fails with a message naming the
limit. Interrupts only ever target a job whose effect is running (`Phase.EFFECT`, see
`tracking`): DuckDB drops an interrupt that arrives between statements, so one can never land
on a commit.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb

from dataplane import effects, proofs, store
from dataplane.effects import Workspace
from dataplane.errors import JobFailure, NotFound, readable
from dataplane.journal import Journal, rollback
from dataplane.model import Failure, FailureKind, Job, JobState, JsonObject, now_iso
from dataplane.quota import DatasetQuota
from dataplane.tracing import JobTracing
from dataplane.tracking import Batch, Phase, Tracker

log = logging.getLogger(__name__)

# Proofs of completion are forgotten in batches, once the journal has recorded their jobs.
_FORGET_EVERY = 256
_MAX_ATTEMPTS = 5  # DuckDB is optimistic: concurrent writers to one table can conflict
# DuckDB's errors that say the query itself is wrong: its syntax, a name it uses, a type, a
# constraint, something locked down.
_QUERY_ERRORS = (
    duckdb.ParserException,
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.ConversionException,
    duckdb.ConstraintException,
    duckdb.InvalidInputException,
    duckdb.OutOfRangeException,
    duckdb.TypeMismatchException,
    duckdb.NotImplementedException,
    duckdb.PermissionException,
)


@dataclass
class _Task:
    job: Job
    lead: bool = False  # must run first in its transaction, so that its outcome is final
    conflicts: int = 0  # conflicted transactions it was in; after one it runs alone

    @property
    def alone(self) -> bool:
        return self.conflicts > 0


@dataclass
class _Transaction:
    opened: float = field(default_factory=time.monotonic)
    done: list[tuple[_Task, JsonObject]] = field(default_factory=list)

    @property
    def tasks(self) -> list[_Task]:
        return [task for task, _ in self.done]


class Runner:
    def __init__(
        self,
        journal: Journal,
        space: Workspace,
        cursor: Callable[[], duckdb.DuckDBPyConnection],
        *,
        timeout_s: float,
        window_s: float,
        requeue: Callable[[list[str]], None],
        quota: DatasetQuota,
        tracing: JobTracing | None = None,
    ) -> None:
        self._journal = journal
        self._space = space
        self._cursor = cursor
        self._timeout_s = timeout_s
        self._window_s = window_s
        self._requeue = requeue
        self._quota = quota
        self._tracing = tracing or JobTracing(None, "")
        self.tracker = Tracker(timeout_s, window_s)

    def run(self, batch: Batch) -> None:
        cur = self._cursor()
        tasks = deque(_Task(job) for job in self._start(cur, batch))
        try:
            while tasks and not self.tracker.closing:
                self._transaction(cur, batch, tasks)
        finally:
            self.tracker.release(batch)

    def cancel(self, job_id: str) -> Job:
        """Cancels at once a job whose effect has not begun; marks one whose effect runs, or
        waits uncommitted in its transaction, as `pending_cancellation`."""
        with self._journal.lock:
            found = store.get_job(self._journal.db, job_id)
            if found is None:
                raise NotFound(f"no job {job_id}")
            job = found[0]
            if job.state not in (JobState.PENDING, JobState.RUNNING):
                return job
            if self.tracker.request_cancel(job_id):
                job = job.moved_to(JobState.PENDING_CANCELLATION)
            else:
                job = job.moved_to(JobState.CANCELLED)
            self._journal.commit([job])
            return job

    def _start(self, cur: duckdb.DuckDBPyConnection, batch: Batch) -> list[Job]:
        """Marks the batch's pending jobs `running`, in one transaction. Jobs already running
        (after a restart, or handed back by another worker) are taken as they are."""
        with self._journal.lock:
            if self.tracker.closing:
                return []
            found = store.get_jobs(self._journal.db, batch.job_ids)
            taken = [
                found[job_id]
                for job_id in dict.fromkeys(batch.job_ids)
                if job_id in found
                and found[job_id].state in (JobState.PENDING, JobState.RUNNING)
                and not self.tracker.holds(job_id)
            ]
            moved = [
                job.moved_to(JobState.RUNNING) for job in taken if job.state is JobState.PENDING
            ]
            self._journal.commit(moved, durable=False)
            started = {job.job_id: job for job in moved}
            jobs = [started.get(job.job_id, job) for job in taken]
            self.tracker.hold(batch, cur, [job.job_id for job in jobs])
            return jobs

    def _transaction(
        self, cur: duckdb.DuckDBPyConnection, batch: Batch, tasks: deque[_Task]
    ) -> None:
        """Runs jobs from the front of `tasks` in one transaction and commits their completions
        together; jobs that must run again are put back at the front."""
        txn = _Transaction()
        cur.execute("BEGIN")
        while tasks and not self.tracker.closing:
            task = tasks[0]
            if txn.done and not self._may_follow(txn, task):
                break
            if not self.tracker.begin_effect(batch, task.job.job_id, speculative=bool(txn.done)):
                tasks.popleft()  # cancelled while it waited for its turn
                continue
            try:
                before = self._quota.before_job(cur, task.job)
                with self._tracing.effect(task.job, speculative=bool(txn.done)):
                    result = effects.run(cur, task.job, self._space)
                self._quota.after_job(cur, before)
            except Exception as exc:
                self.tracker.end_effect(batch, task.job.job_id, succeeded=False)
                rollback(cur)
                self._after_error(cur, batch, tasks, txn, exc)
                return
            self.tracker.end_effect(batch, task.job.job_id, succeeded=True)
            txn.done.append((tasks.popleft(), result))
        if txn.done:
            self._commit(cur, tasks, txn)
        else:
            rollback(cur)

    def _may_follow(self, txn: _Transaction, task: _Task) -> bool:
        return (
            not task.lead
            and not task.alone
            and not txn.done[0][0].alone
            and time.monotonic() - txn.opened < self._window_s
        )

    def _commit(
        self, cur: duckdb.DuckDBPyConnection, tasks: deque[_Task], txn: _Transaction
    ) -> None:
        """Commits the effects with their proofs, then their completions in the journal."""
        ended = [task.job.moved_to(JobState.COMPLETED, result=r) for task, r in txn.done]
        proofs.record(cur, ended)  # stamped a little early: used only if never journaled
        with self._journal.lock:
            if self.tracker.cancel_requested([task.job.job_id for task in txn.tasks]):
                rollback(cur)
                self._again(tasks, self._settle_cancelled(txn.tasks))
                return
            try:
                cur.execute("COMMIT")
            except duckdb.TransactionException as exc:
                rollback(cur)
                log.debug("a transaction of %d jobs conflicted: %s", len(txn.done), exc)
                again = []
                for task in txn.tasks:
                    task.conflicts += 1
                    if task.conflicts < _MAX_ATTEMPTS:
                        again.append(task)
                    else:
                        self._fail(task.job, str(exc), FailureKind.CONFLICT)
                self._again(tasks, again)
                return
            # Stamped once the effects are final: a job ends when its effect commits.
            completed = [task.job.moved_to(JobState.COMPLETED, result=r) for task, r in txn.done]
            self._journal.commit(completed, proved=True, durable=False)
            proved = self._journal.take_proved(_FORGET_EVERY)
        self._space.known.learn(result for _, result in txn.done)
        try:
            proofs.forget(cur, proved)
        except duckdb.TransactionException as exc:
            log.debug("proofs kept until the next start: %s", exc)

    def _after_error(
        self,
        cur: duckdb.DuckDBPyConnection,
        batch: Batch,
        tasks: deque[_Task],
        txn: _Transaction,
        exc: Exception,
    ) -> None:
        """Decides what the job at the front of `tasks`, whose effect raised, comes to after
        its transaction rolled back; the jobs whose effects were undone with it run again."""
        task = tasks[0]
        with self._journal.lock:
            if self.tracker.closing:
                return  # everything stays `running` and runs again after restart
            again = self._settle_cancelled(txn.tasks)
            marks = self.tracker.take_marks(task.job.job_id)
            if marks.cancelled:
                self._commit_cancelled([task.job])
                tasks.popleft()
            elif marks.timed_out:
                self._fail(task.job, self._time_limit_message(), FailureKind.TIME_LIMIT)
                tasks.popleft()
            elif txn.done:
                # Speculative: the error may come from the uncommitted effects before it.
                task.lead = True
                if marks.evicted:
                    self._hand_back(batch, tasks)
                again.append(task)
                tasks.popleft()
            elif self._settle_error(cur, task, exc):
                tasks.popleft()
            else:
                again.append(tasks.popleft())
            self._again(tasks, again)

    def _settle_error(self, cur: duckdb.DuckDBPyConnection, task: _Task, exc: Exception) -> bool:
        """Fails a job that ran first in its transaction with its error; False if it is to run
        again instead (a conflict, below the limit of attempts)."""
        if isinstance(exc, duckdb.TransactionException):
            task.conflicts += 1
            log.debug("job %s conflicted (attempt %d): %s", task.job.job_id, task.conflicts, exc)
            if task.conflicts < _MAX_ATTEMPTS:
                return False
            message, kind = str(exc), FailureKind.CONFLICT
        elif isinstance(exc, duckdb.InterruptException):
            message, kind = "the query was interrupted", FailureKind.INTERRUPTED
        elif isinstance(exc, JobFailure):
            message, kind = str(exc), FailureKind(exc.kind)
        elif isinstance(exc, _QUERY_ERRORS):
            message, kind = str(exc), FailureKind.QUERY
        elif isinstance(exc, duckdb.Error):
            message, kind = str(exc), FailureKind.ENGINE
        else:
            log.error("job %s failed unexpectedly", task.job.job_id, exc_info=exc)
            message, kind = f"internal error: {exc}", FailureKind.INTERNAL
        self._fail(task.job, message, kind)
        return True

    def _hand_back(self, batch: Batch, tasks: deque[_Task]) -> None:
        """Returns the jobs queued behind a slow one to the company's queue, for other
        workers; they stay `running`, as a worker took them."""
        behind = [tasks.pop() for _ in range(len(tasks) - 1)][::-1]
        job_ids = [task.job.job_id for task in behind]
        self.tracker.let_go(batch, job_ids)
        self._requeue(job_ids)

    def _again(self, tasks: deque[_Task], again: list[_Task]) -> None:
        self.tracker.set_phase([task.job.job_id for task in again], Phase.WAITING)
        tasks.extendleft(reversed(again))

    def _settle_cancelled(self, done: list[_Task]) -> list[_Task]:
        """Commits the cancellation of the jobs among `done` (their effects rolled back) that
        were cancelled meanwhile; returns the others."""
        requested = self.tracker.cancel_requested([task.job.job_id for task in done])
        self._commit_cancelled([task.job for task in done if task.job.job_id in requested])
        return [task for task in done if task.job.job_id not in requested]

    def _commit_cancelled(self, jobs: list[Job]) -> None:
        current = store.get_jobs(self._journal.db, [job.job_id for job in jobs])
        self._journal.commit(
            [current.get(job.job_id, job).moved_to(JobState.CANCELLED) for job in jobs]
        )

    def _fail(self, job: Job, message: str, kind: FailureKind) -> None:
        failure = Failure(message=readable(message), timestamp=now_iso(), value={"kind": kind})
        self._journal.commit([job.moved_to(JobState.FAILED, failure=failure)])

    def _time_limit_message(self) -> str:
        return (
            f"the job ran longer than its time limit of {self._timeout_s:g} s and was"
            " stopped (the data plane's job_timeout_s, --job-timeout-s)"
        )
