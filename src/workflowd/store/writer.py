"""The group-committing writer: one thread, one connection, one transaction per batch.

Every change queued while the writer was busy runs in the next transaction, each inside its
own SAVEPOINT (a change that raises is rolled back alone; the batch goes on), and each caller's
future resolves only once that transaction committed. Durability then costs one commit per
batch, not one per change. A batch takes at most `MAX_BATCH` changes, company by company in
turn (`domain/fairness.py`): one company's thousands of queued changes delay another's by one
batch, not by all of them. A change that stops work (an unschedule, a cancel request) is
`urgent`: it goes first in the next batch, never behind the backlog it is meant to stop. The
thread runs the store's synchronous change functions as they are (a `Conn` from `sql.py`),
for SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from workflowd.domain.errors import Unavailable
from workflowd.domain.fairness import TakeTurns, acting_for
from workflowd.store.sql import Conn

T = TypeVar("T")
Op = Callable[[Conn], T]

log = logging.getLogger("workflowd.store")

MAX_BATCH = 512


class WriterConn(Conn, Protocol):
    def close(self) -> None: ...


@dataclass
class _Pending:
    op: Op[Any]
    future: asyncio.Future[Any]


@dataclass(frozen=True)
class _Failure:
    """An op that raised: its own changes were rolled back to its savepoint, the batch goes on."""

    exc: Exception


class GroupWriter:
    def __init__(
        self,
        connect: Callable[[], WriterConn],
        begin: str,
        name: str,
        before_commit: str = "",
        translate: Callable[[Exception], Exception] = lambda exc: exc,
    ) -> None:
        self._connect = connect
        # The database's own errors, raised by a change, as ours (a value it refuses, a
        # damaged file), so no caller sees sqlite3's or psycopg's exceptions.
        self._translate = translate
        self._begin = begin
        # A statement that ends every batch before its COMMIT (PostgreSQL: tell the other
        # replicas that the log has grown).
        self._before_commit = before_commit
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"workflowd-{name}-writer")
        self._conn: WriterConn | None = None
        self._queue: TakeTurns[_Pending] = TakeTurns()
        self._urgent: deque[_Pending] = deque()
        self._queued = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._commits = 0

    async def run_once(self, op: Op[T]) -> T:
        """Run `op` on the writer's thread and connection outside any batch (migrations)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: op(self._connection()))
        except Exception as exc:
            ours = self._translate(exc)
            if ours is exc:
                raise
            raise ours from exc

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the writer is already started")
        self._task = asyncio.create_task(self._loop(), name="store-writer")

    @property
    def queued(self) -> int:
        """Changes waiting for a batch."""
        return len(self._queue) + len(self._urgent)

    @property
    def commits(self) -> int:
        """Write transactions committed since `start` (one per batch, however many writes it
        held): with the number of writes, how well commits are shared."""
        return self._commits

    def submit(self, op: Op[T], *, urgent: bool = False) -> asyncio.Future[T]:
        """Queue a write now, in the line of the company the caller acts for (keeping its place
        in that company's commit order), or `urgent`, ahead of every line; return its future."""
        if self._closed or self._task is None:
            raise Unavailable("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        pending = _Pending(op, future)
        if urgent:
            self._urgent.append(pending)
        else:
            self._queue.push(acting_for.get(), pending)
        self._queued.set()
        return future

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            # Every write queued before the close commits and answers its caller first.
            self._queued.set()
            await self._task
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._close_connection)
        self._pool.shutdown(wait=True)

    def _ours(self, exc: Exception) -> Exception:
        ours = self._translate(exc)
        if ours is not exc:
            ours.__cause__ = exc
        return ours

    def _connection(self) -> WriterConn:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue and not self._urgent:
                if self._closed:
                    return
                self._queued.clear()
                await self._queued.wait()
                continue
            batch = [self._urgent.popleft() for _ in range(min(MAX_BATCH, len(self._urgent)))]
            batch += [
                self._queue.pop() for _ in range(min(MAX_BATCH - len(batch), len(self._queue)))
            ]
            live = [p for p in batch if not p.future.cancelled()]
            if not live:
                continue
            try:
                outcomes = await loop.run_in_executor(self._pool, self._run_batch, live)
            except Exception as exc:
                log.exception("store batch failed")
                outcomes = [exc] * len(live)
            for pending, outcome in zip(live, outcomes, strict=True):
                if pending.future.done():
                    continue
                if isinstance(outcome, _Failure):
                    pending.future.set_exception(self._ours(outcome.exc))
                elif isinstance(outcome, Exception):
                    pending.future.set_exception(Unavailable(f"store write failed: {outcome}"))
                else:
                    pending.future.set_result(outcome)

    def _run_batch(self, batch: list[_Pending]) -> list[Any]:
        conn = self._connection()
        try:
            conn.execute(self._begin)
        except Exception:
            # The connection may be gone (a database server restarted): the next batch starts
            # on a new one rather than failing on this one forever.
            self._close_connection()
            raise
        results: list[Any] = []
        try:
            for pending in batch:
                conn.execute("SAVEPOINT op")
                try:
                    results.append(pending.op(conn))
                except Exception as exc:
                    conn.execute("ROLLBACK TO SAVEPOINT op")
                    results.append(_Failure(exc))
                conn.execute("RELEASE SAVEPOINT op")
            if self._before_commit:
                conn.execute(self._before_commit)
            conn.execute("COMMIT")
            self._commits += 1  # only the writer thread writes it; readers see a whole int
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except Exception:
                # The connection is unusable (e.g. the server went away): start afresh.
                self._close_connection()
            raise
        return results
