"""One company's data plane: its DuckDB file, worker threads, job queue and event hub.

Everything that touches DuckDB runs on a thread (a cursor per thread), never on the event
loop. Workers run jobs in batches, several to a transaction (see `runner`); a small control
pool serves requests (read, cancel, datasets) and commits submissions in groups (see
`submissions`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import duckdb
from opentelemetry.trace import Tracer

from dataplane import catalog, loader, proofs, store
from dataplane.catalog import IdAllocator
from dataplane.effects import Workspace
from dataplane.errors import Overloaded, quote
from dataplane.guard import EXPLAIN_CONFIG
from dataplane.hub import Event, Hub
from dataplane.journal import Journal
from dataplane.metrics import Load, PlaneMetrics
from dataplane.model import Job, JobState, JsonObject, Submission
from dataplane.quota import DatasetQuota
from dataplane.runner import Runner
from dataplane.store import JobFilter
from dataplane.submissions import Submissions
from dataplane.tracing import JobTracing
from dataplane.tracking import Batch, Tracker

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Set when the database opens, before user NQL can run; `lock_configuration` goes last so
# nothing (not even our own code) can turn access back on afterwards.
OPEN_CONFIG = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_persistent_secrets": False,
}
# The job journal (SQLite) beside the company's DuckDB file: `<company>.journal`.
JOURNAL_SUFFIX = ".journal"
_INTERRUPT_EVERY_S = 0.05
_LOCKDOWN = ("SET enable_external_access = false", "SET lock_configuration = true")
_MEMORY = re.compile(r"([0-9]+(\.[0-9]+)? ?[KMGT]i?B|[0-9]{1,2}%)", re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    workers: int = 2
    query_threads: int | None = None  # DuckDB's default: every core
    control_threads: int = 2
    retain_changes: int = 10_000
    subscriber_buffer: int = 1_000
    max_queued_jobs: int = 100_000
    job_timeout_s: float = 3600.0
    memory_limit: str = "1GiB"  # per company database; DuckDB's own default is 80% of RAM
    # A worker takes at most `max_batch` queued jobs at once and runs them in transactions
    # open for about `batch_window_s`: longer windows commit less often, but a quick job may
    # wait that long (twice, at worst) for the jobs batched after it.
    max_batch: int = 32
    batch_window_s: float = 0.05
    dataset_quota_bytes: int = 0  # 0: none

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        for name, seconds in (
            ("the job time limit", self.job_timeout_s),
            ("the batch window", self.batch_window_s),
        ):
            if not 0 < seconds < math.inf:
                raise ValueError(f"{name} must be a positive number of seconds")
        if not _MEMORY.fullmatch(self.memory_limit):
            raise ValueError(
                f"memory limit {quote(self.memory_limit)} must be a size such as 1GiB or"
                " 512MB, or a percentage of RAM such as 50%"
            )


class Company:
    def __init__(
        self,
        name: str,
        path: Path,
        limits: Limits,
        metrics: PlaneMetrics,
        tracer: Tracer | None = None,
    ) -> None:
        self.name = name
        self._tracer = tracer
        self._path = path
        self._limits = limits
        self._metrics = metrics
        self._busy = 0
        self._started: dict[str, float] = {}  # job id → monotonic start, for durations
        self._loop = asyncio.get_running_loop()
        self.hub = Hub(limits.subscriber_buffer)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._readers: list[sqlite3.Connection] = []
        self._cursors_lock = threading.Lock()
        self._workers = ThreadPoolExecutor(limits.workers, f"dataplane-{name}-worker")
        self._control = ThreadPoolExecutor(limits.control_threads, f"dataplane-{name}-control")
        self._tasks: list[asyncio.Task[None]] = []
        self._interrupters: set[asyncio.Task[None]] = set()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._journal: Journal | None = None
        self._ids: IdAllocator | None = None
        self._database: str | None = None
        self._runner: Runner | None = None
        self._submissions: Submissions | None = None
        self._quota = DatasetQuota(limits.dataset_quota_bytes, Path(f"{path}.wal"))

    async def open(self) -> None:
        await self._call(self._open_database)
        journal = self._need(self._journal)
        self._runner = Runner(
            journal,
            Workspace(self._need(self._ids), self._need(self._database)),
            self._cursor,
            timeout_s=self._limits.job_timeout_s,
            window_s=self._limits.batch_window_s,
            requeue=self._requeue,
            quota=self._quota,
            tracing=JobTracing(self._tracer, self.name),
        )
        self._submissions = Submissions(journal, lambda fn: self._call(fn), self._queue_jobs)
        self._queue_jobs(await self._call(self._recover))
        self._tasks = [
            asyncio.create_task(self._work(), name=f"dataplane-{self.name}-{i}")
            for i in range(self._limits.workers)
        ]

    def _open_database(self) -> None:
        con = duckdb.connect(str(self._path), config=dict(OPEN_CONFIG))
        try:
            db = store.open_journal(self._path.with_suffix(JOURNAL_SUFFIX))
        except BaseException:
            con.close()
            raise
        try:
            self._prepare(con, db)
        except BaseException:
            con.close()  # a damaged file: nothing of it stays open
            db.close()
            raise
        self._con = con

    def _prepare(self, con: duckdb.DuckDBPyConnection, db: sqlite3.Connection) -> None:
        con.execute(catalog.SCHEMA_DDL)
        con.execute(proofs.SCHEMA_DDL)
        _adopt_duckdb_journal(con, db)
        last_event_id = store.event_id_range(db)[1]
        self._ids = IdAllocator(con)
        row = con.execute("SELECT current_database()").fetchone()
        self._database = str(row[0]) if row else ""
        if self._limits.query_threads is not None:
            con.execute(f"SET threads = {int(self._limits.query_threads)}")
        # Validated by Limits, so safe to splice; settings cannot change after the lockdown.
        con.execute(f"SET GLOBAL memory_limit = '{self._limits.memory_limit}'")
        for setting, value in EXPLAIN_CONFIG.items():
            con.execute(f"SET GLOBAL {setting} = '{value}'")
        for statement in _LOCKDOWN:
            con.execute(statement)
        self._journal = Journal(db, last_event_id, self._limits.retain_changes, self._publish)

    def _publish(self, events: list[Event]) -> None:
        # Called under the journal lock, so batches are handed over in event-id order.
        self._loop.call_soon_threadsafe(self._deliver, events)
        for event in events:
            job = event.job
            if job.state is JobState.RUNNING:
                self._started.setdefault(job.job_id, time.monotonic())
            elif job.state.terminal:
                started = self._started.pop(job.job_id, None)
                seconds = None if started is None else time.monotonic() - started
                self._metrics.job_ended(self.name, job.type.value, job.state.value, seconds)

    def _deliver(self, events: list[Event]) -> None:
        for event in events:
            self.hub.publish(event)

    def workload(self) -> Load:
        """How busy the company's workers are, for /healthz and /metrics."""
        submitting = self._submissions.waiting if self._submissions else 0
        return Load(self._busy, self._limits.workers, self._queue.qsize(), submitting)

    def _recover(self) -> list[str]:
        """Complete the jobs whose effects committed before the crash let the journal record
        them (their proofs say so); cancel what was being cancelled; queue the rest (running
        jobs run again)."""
        cur, journal = self._cursor(), self._need(self._journal)
        with journal.lock:
            unfinished = store.unfinished(journal.db)
            proved = proofs.find(cur, [job.job_id for job in unfinished])
            settled = [
                proved[job.job_id].completes(job)
                if job.job_id in proved
                else job.moved_to(JobState.CANCELLED)
                for job in unfinished
                if job.job_id in proved or job.state is JobState.PENDING_CANCELLATION
            ]
            journal.commit(settled)
            # Every completion a proof proves is in the journal now; the last run may have
            # left some unsynced, so the journal is synced before the proofs go.
            journal.sync()
            proofs.forget(cur)
        ended = {job.job_id for job in settled}
        return [job.job_id for job in unfinished if job.job_id not in ended]

    def _requeue(self, job_ids: list[str]) -> None:
        """Queues jobs again, from a worker thread."""
        self._loop.call_soon_threadsafe(self._queue_jobs, job_ids)

    def _queue_jobs(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self._queue.put_nowait(job_id)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._need(self._con).cursor()
            self._local.cursor = cur
            with self._cursors_lock:
                self._cursors.append(cur)
        return cur

    def _reader(self) -> sqlite3.Connection:
        """This thread's connection for reads of the job journal outside the journal's lock
        (WAL: they never wait for its writer)."""
        db: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if db is None:
            db = store.connect(self._path.with_suffix(JOURNAL_SUFFIX))
            self._local.reader = db
            with self._cursors_lock:
                self._readers.append(db)
        return db

    async def _work(self) -> None:
        runner = self._need(self._runner)
        while True:
            first = await self._queue.get()
            batch = Batch([first, *self._share()])
            self._busy += 1
            try:
                await self._run(runner, batch)
            except Exception:
                log.exception("company %s: jobs %s could not be run", self.name, batch.job_ids)
            finally:
                self._busy -= 1

    def _share(self) -> list[str]:
        """More queued jobs for a worker's batch: an even share among the idle workers, so
        that a burst is spread over all of them."""
        idle = self._limits.workers - self._busy  # this worker is not counted busy yet
        share = min(self._limits.max_batch, math.ceil((1 + self._queue.qsize()) / idle))
        return [self._queue.get_nowait() for _ in range(min(share - 1, self._queue.qsize()))]

    async def _run(self, runner: Runner, batch: Batch) -> None:
        """Runs the batch on a worker, interrupting a job that runs over its time limit, or
        over the batch window while it is speculative."""
        running = self._loop.run_in_executor(self._workers, runner.run, batch)
        while not running.done():
            wait_s, overdue = runner.tracker.supervise(batch)
            if overdue is not None:
                self._keep_interrupting(runner.tracker, overdue)
            await asyncio.wait([running], timeout=wait_s)
        running.result()

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._loop.run_in_executor(self._control, lambda: fn(*args, **kwargs))

    async def submit(self, submission: Submission) -> tuple[Job, bool]:
        """The new job and True, or the job already submitted under the key and False."""
        if self._queue.qsize() >= self._limits.max_queued_jobs:
            raise Overloaded(f"more than {self._limits.max_queued_jobs} jobs are queued")
        return await self._need(self._submissions).submit(submission)

    async def get(self, job_id: str) -> tuple[Job, int] | None:
        return await self._call(lambda: store.get_job(self._reader(), job_id))

    async def list_jobs(
        self, where: JobFilter, order_by: str, limit: int, offset: int
    ) -> tuple[list[Job], int]:
        return await self._call(
            lambda: store.list_jobs(self._reader(), where, order_by, limit, offset)
        )

    async def cancel(self, job_id: str) -> Job:
        runner = self._need(self._runner)
        job = await self._call(lambda: runner.cancel(job_id))
        if job.state is JobState.PENDING_CANCELLATION:
            self._keep_interrupting(runner.tracker, job_id)
        return job

    def _keep_interrupting(self, tracker: Tracker, job_id: str) -> None:
        task = asyncio.create_task(self._interrupt_until_stopped(tracker, job_id))
        self._interrupters.add(task)
        task.add_done_callback(self._interrupters.discard)

    async def _interrupt_until_stopped(self, tracker: Tracker, job_id: str) -> None:
        while True:
            if not tracker.interrupt_if_stopping(job_id):
                return
            await asyncio.sleep(_INTERRUPT_EVERY_S)

    async def changes_after(
        self, after: int, where: JobFilter, limit: int
    ) -> tuple[tuple[int, int], list[tuple[int, str]]]:
        """The retained id range and the stored changes after `after`."""

        def read() -> tuple[tuple[int, int], list[tuple[int, str]]]:
            db = self._reader()
            return store.event_id_range(db), store.changes_after(db, after, where, limit)

        return await self._call(read)

    async def datasets(self) -> list[JsonObject]:
        return await self._call(lambda: catalog.list_all(self._cursor()))

    async def describe(self, name_or_id: str | int) -> JsonObject:
        def read() -> JsonObject:
            cur = self._cursor()
            return catalog.describe(cur, catalog.get(cur, name_or_id))

        return await self._call(read)

    async def sample(self, name_or_id: str | int, limit: int) -> JsonObject:
        def read() -> JsonObject:
            cur = self._cursor()
            return catalog.sample(cur, catalog.get(cur, name_or_id), limit)

        return await self._call(read)

    async def load(self, path: Path, file_format: str, name: str, replace: bool) -> JsonObject:
        ids = self._need(self._ids)
        return await self._call(
            lambda: loader.load(
                self._cursor(), ids, path=path, file_format=file_format, name=name,
                replace=replace, quota=self._quota,
            )
        )  # fmt: skip

    async def aclose(self) -> None:
        self.hub.close()
        if self._submissions is not None:
            await self._submissions.aclose()
        # Polled: DuckDB gives no signal when an interrupted query has actually stopped.
        while self._runner is not None:
            if not self._runner.tracker.close():
                break
            await asyncio.sleep(_INTERRUPT_EVERY_S)
        tasks = [*self._tasks, *self._interrupters]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self._shutdown_threads)

    def _shutdown_threads(self) -> None:
        self._workers.shutdown(wait=True, cancel_futures=True)
        self._control.shutdown(wait=True, cancel_futures=True)
        for cur in self._cursors:
            cur.close()
        if self._con is not None:
            self._con.close()
        for db in self._readers:
            db.close()
        if self._journal is not None:
            self._journal.db.close()

    @staticmethod
    def _need(value: T | None) -> T:
        if value is None:
            raise RuntimeError("the company's database is not open")
        return value


def _adopt_duckdb_journal(con: duckdb.DuckDBPyConnection, db: sqlite3.Connection) -> None:
    """Moves a journal kept in DuckDB (`_dataplane.jobs` and `changes`, before the journal had
    its own file) into the SQLite journal, once: copied in one transaction, then dropped."""
    old = con.execute(
        "SELECT count(*) FROM duckdb_tables()"
        " WHERE schema_name = '_dataplane' AND table_name IN ('jobs', 'changes')"
    ).fetchone()
    if not old or not old[0]:
        return
    row = db.execute("SELECT count(*) FROM jobs").fetchone()
    if row is not None and row[0] == 0:  # not copied yet (a crash may have come after the copy)
        jobs = con.execute(
            "SELECT job_id, type, state, input, result, failures, idempotency_key, digest,"
            " to_json(tags)::VARCHAR, metadata, workflow_run_id, created_at, updated_at,"
            " ended_at, last_event_id, traceparent FROM _dataplane.jobs"
        ).fetchall()
        changes = con.execute(
            "SELECT event_id, job_id, type, to_json(tags)::VARCHAR, workflow_run_id, job"
            " FROM _dataplane.changes"
        ).fetchall()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(f"INSERT INTO jobs VALUES ({', '.join('?' * 16)})", jobs)
            db.executemany("INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?)", changes)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        log.info("moved %d jobs and %d changes to the job journal", len(jobs), len(changes))
    con.execute("DROP TABLE IF EXISTS _dataplane.changes")
    con.execute("DROP TABLE IF EXISTS _dataplane.jobs")
