"""SQLite access: one writer thread that group-commits, one reader thread, WAL.

The standard library's sqlite3 runs in two dedicated threads rather than through a per-statement
async wrapper: a whole transaction (a batch of changes from many runs) is one hop to the writer
thread and one commit, so durability costs one commit per batch, not one per change or statement.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from workflowd.domain.errors import Unavailable, WorkflowdError
from workflowd.store.migrations import MIGRATIONS

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], T]

log = logging.getLogger("workflowd.store")

_MAX_BATCH = 512


@dataclass
class _Pending:
    op: Op[Any]
    future: asyncio.Future[Any]


class Database:
    """Owns the SQLite file. `write(op)` runs `op(conn)` inside a transaction shared with other
    writes that arrived together; the caller resumes only after that transaction committed."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="workflowd-sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(1, thread_name_prefix="workflowd-sqlite-reader")
        self._local = threading.local()
        self._queue: asyncio.Queue[_Pending | None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._closed = False
        self._commits = 0

    async def open(self) -> None:
        if self._writer_task is not None:
            raise RuntimeError("database already open")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer_pool, self._migrate)
        self._queue = asyncio.Queue()
        self._writer_task = asyncio.create_task(self._write_loop(), name="sqlite-writer")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer_task is not None and self._queue is not None:
            # The sentinel lets every write queued before the close commit and answer its caller.
            self._queue.put_nowait(None)
            await self._writer_task
        loop = asyncio.get_running_loop()
        for pool in (self._writer_pool, self._reader_pool):
            await loop.run_in_executor(pool, self._close_thread_connection)
            pool.shutdown(wait=True)

    @property
    def commits(self) -> int:
        """Write transactions committed since `open` (one per batch, however many writes it
        held; migrations not counted): with the number of writes, how well commits are shared."""
        return self._commits

    async def write(self, op: Op[T]) -> T:
        return await self.submit(op)

    def submit(self, op: Op[T]) -> asyncio.Future[T]:
        """Queue a write now (keeping its place in commit order) and return its future, for
        callers that need the ordering but not to wait for the commit."""
        if self._closed or self._queue is None:
            raise Unavailable("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(op, future))
        return future

    async def read(self, op: Op[T]) -> T:
        if self._closed:
            raise Unavailable("the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, self._run_read, op)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash (kill -9); only an OS crash
            # or power loss can lose the last transactions ("Durability" in
            # docs/architecture.md explains the trade).
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
        return conn

    def _close_thread_connection(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _migrate(self) -> None:
        conn = self._connection()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        newest = max(applied, default=0)
        if newest > len(MIGRATIONS):
            raise WorkflowdError(
                f"the store at {self._path} has schema version {newest}, newer than this "
                f"workflowd knows ({len(MIGRATIONS)}): upgrade workflowd"
            )
        for version, script in enumerate(MIGRATIONS, start=1):
            if version in applied:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in script:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("applied store migration %d", version)

    def _run_read(self, op: Op[T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN")
        try:
            return op(conn)
        finally:
            conn.execute("COMMIT")

    async def _write_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            batch: list[_Pending] = []
            item = await self._queue.get()
            while item is not None:
                batch.append(item)
                if len(batch) >= _MAX_BATCH or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            stopping = item is None
            live = [p for p in batch if not p.future.cancelled()]
            if not live:
                continue
            try:
                outcomes = await loop.run_in_executor(self._writer_pool, self._run_batch, live)
            except Exception as exc:
                log.exception("store batch failed")
                outcomes = [exc] * len(live)
            for pending, outcome in zip(live, outcomes, strict=True):
                if pending.future.done():
                    continue
                if isinstance(outcome, _Failure):
                    pending.future.set_exception(outcome.exc)
                elif isinstance(outcome, Exception):
                    pending.future.set_exception(Unavailable(f"store write failed: {outcome}"))
                else:
                    pending.future.set_result(outcome)

    def _run_batch(self, batch: list[_Pending]) -> list[Any]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        results: list[Any] = []
        try:
            for pending in batch:
                conn.execute("SAVEPOINT op")
                try:
                    results.append(pending.op(conn))
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    results.append(_Failure(exc))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
            self._commits += 1  # only the writer thread writes it; readers see a whole int
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results


@dataclass(frozen=True)
class _Failure:
    """An op that raised: its own changes were rolled back to its savepoint, the batch goes on."""

    exc: Exception
