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

The thread takes its next batch itself as soon as a commit ends, and hands the outcomes to the
event loop in one call. It never waits for the loop to form a batch: when the loop runs long
stretches (thousands of runs), the changes that came meanwhile commit while it is busy, instead
of waiting for it to come round (measured in docs/performance.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from workflowd.domain.errors import Unavailable
from workflowd.domain.fairness import TakeTurns, acting_for
from workflowd.store.sql import Conn

T = TypeVar("T")
Op = Callable[[Conn], T]

log = logging.getLogger("workflowd.store")

# Every change of a batch waits for the whole batch's commit: a burst of job ends (one chunk of
# the jobs API's event stream resolves hundreds of waiters at once) made batches of a hundred
# changes and more, each waiting up to 80 ms for the others. A commit costs a fraction of a
# millisecond in WAL, so smaller batches halve the wait at no measurable cost (measured in
# docs/performance.md: a watcher's latency p50 16 ms -> 7.8 ms at 3,000 runs).
MAX_BATCH = 32


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
        self._name = name
        self._conn: WriterConn | None = None
        # What the loop hands the thread, guarded by `_lock`; `_wake` tells the thread.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: TakeTurns[_Pending] = TakeTurns()
        self._urgent: deque[_Pending] = deque()
        self._alone: deque[_Pending] = deque()
        self._ending = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended: asyncio.Future[None] | None = None
        self._started = False
        self._closed = False
        self._commits = 0

    async def run_once(self, op: Op[T]) -> T:
        """Run `op` on the writer's thread and connection outside any batch (migrations)."""
        if self._closed:
            raise Unavailable("the store is closed")
        future: asyncio.Future[T] = self._ensure_thread().create_future()
        with self._lock:
            self._alone.append(_Pending(op, future))
            self._wake.notify()
        return await future

    def start(self) -> None:
        if self._started:
            raise RuntimeError("the writer is already started")
        self._ensure_thread()
        self._started = True

    @property
    def queued(self) -> int:
        """Changes waiting for a batch."""
        with self._lock:
            return len(self._queue) + len(self._urgent)

    @property
    def commits(self) -> int:
        """Write transactions committed since `start` (one per batch, however many writes it
        held): with the number of writes, how well commits are shared."""
        return self._commits

    def submit(self, op: Op[T], *, urgent: bool = False) -> asyncio.Future[T]:
        """Queue a write now, in the line of the company the caller acts for (keeping its place
        in that company's commit order), or `urgent`, ahead of every line; return its future."""
        if self._closed or not self._started or self._loop is None:
            raise Unavailable("the store is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        pending = _Pending(op, future)
        company = acting_for.get()
        with self._lock:
            if urgent:
                self._urgent.append(pending)
            else:
                self._queue.push(company, pending)
            self._wake.notify()
        return future

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is None or self._ended is None:
            return
        # Every write queued before the close commits and answers its caller first.
        with self._lock:
            self._ending = True
            self._wake.notify()
        await self._ended

    def _ensure_thread(self) -> asyncio.AbstractEventLoop:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._ended = self._loop.create_future()
            # A daemon thread: a writer nobody closed must not keep the process from exiting.
            self._thread = threading.Thread(
                target=self._work, name=f"workflowd-{self._name}-writer", daemon=True
            )
            self._thread.start()
        assert self._loop is not None
        return self._loop

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

    def _next(self) -> tuple[list[_Pending], bool] | None:
        """The next work, taken under the lock: ops to run alone (True) or a batch (False);
        None once closing and nothing is left."""
        with self._lock:
            while not (self._alone or self._urgent or self._queue or self._ending):
                self._wake.wait()
            if self._alone:
                return [self._alone.popleft()], True
            batch = [self._urgent.popleft() for _ in range(min(MAX_BATCH, len(self._urgent)))]
            batch += [
                self._queue.pop() for _ in range(min(MAX_BATCH - len(batch), len(self._queue)))
            ]
            return (batch, False) if batch else None

    def _work(self) -> None:
        """The writer thread: batches until closed, each outcome handed to the loop."""
        try:
            while (work := self._next()) is not None:
                pending, alone = work
                outcomes: list[Any]
                if alone:
                    outcomes = [self._run_alone(pending[0])]
                else:
                    # A caller that gave up before its batch formed: its change is not made.
                    live = [p for p in pending if not p.future.cancelled()]
                    if not live:
                        continue
                    pending = live
                    try:
                        outcomes = self._run_batch(live)
                    except Exception as exc:
                        log.exception("store batch failed")
                        outcomes = [exc] * len(live)
                self._hand_over(self._deliver, pending, outcomes)
        finally:
            try:
                self._close_connection()
            finally:
                self._hand_over(self._finished)

    def _hand_over(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            log.warning("the %s writer's outcomes came after its event loop closed", self._name)

    def _finished(self) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    def _run_alone(self, pending: _Pending) -> Any:
        try:
            return pending.op(self._connection())
        except Exception as exc:
            return _Failure(exc)

    def _deliver(self, batch: list[_Pending], outcomes: list[Any]) -> None:
        for pending, outcome in zip(batch, outcomes, strict=True):
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
            if len(batch) == 1:
                # Alone in its transaction, a change needs no savepoint (two statements fewer,
                # the usual case when the writer keeps up): if it raises, nothing commits.
                try:
                    results.append(batch[0].op(conn))
                except Exception as exc:
                    conn.execute("ROLLBACK")
                    return [_Failure(exc)]
            else:
                results = [_in_savepoint(conn, pending.op) for pending in batch]
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


def _in_savepoint(conn: Conn, op: Op[Any]) -> Any:
    """`op`'s result, or its failure with its changes rolled back (the batch goes on)."""
    conn.execute("SAVEPOINT op")
    try:
        result = op(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO SAVEPOINT op")
        result = _Failure(exc)
    conn.execute("RELEASE SAVEPOINT op")
    return result
