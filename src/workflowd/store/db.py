"""The SQLite store's connections: one group-committing writer thread (the standard library's
sqlite3: a whole batch of changes is one hop to the thread and one commit), and a small pool of
aiosqlite connections for reads, each read in its own snapshot (WAL lets readers run while the
writer writes, so one slow listing never holds up another read)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from workflowd.domain.errors import Unavailable, ValueRefused
from workflowd.store.lock import ExclusiveFile, Locked
from workflowd.store.migrate import migrate
from workflowd.store.query import Reader
from workflowd.store.sql import SQLITE, Conn, Dialect, SqliteConn
from workflowd.store.writer import GroupWriter

log = logging.getLogger("workflowd.store")

READERS = 4


class StoreInUse(Unavailable):
    """Another live process has the SQLite store open."""


_BEGIN_WRITE = "BEGIN IMMEDIATE"


def _pragmas(conn: sqlite3.Connection) -> None:
    # Only a store created with it has it (it must come before the first table): pages freed
    # by deleted runs then go back to the file system (`reclaim`). An older store keeps
    # reusing its free pages, and shrinks only by a VACUUM (docs/operations.md, "Retention").
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    # The WAL is cut back to this when it starts over after a checkpoint: a burst of writes (a
    # retention pass) leaves no large file behind.
    conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
    # NORMAL in WAL mode: a commit survives a process crash (kill -9); only an OS crash
    # or power loss can lose the last transactions ("Durability" in docs/architecture.md
    # explains the trade).
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")


_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
WAL_LIMIT_BYTES = 32 * 1024 * 1024
# Pages moved and freed per write: moving a page rewrites the pointers to it, so on a large file
# a step of 8 stays within a few milliseconds (docs/performance.md, "Retention").
VACUUM_PAGES = 8


def _checkpoint(conn: Conn) -> None:
    # PASSIVE: it never makes writes wait (a TRUNCATE would block them until readers are
    # done); `journal_size_limit` then cuts the WAL when it starts over. Read to its end: a
    # statement left in progress would refuse the next batch's SAVEPOINT.
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _vacuum_step(conn: Conn) -> int:
    """Free up to VACUUM_PAGES pages; how many free pages remain (0 in a store without
    auto_vacuum, whose free pages are only reused)."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # 2: INCREMENTAL
        return 0
    # Python's sqlite3 steps a PRAGMA once, and each step of this one frees one page.
    for _ in range(VACUUM_PAGES):
        conn.execute("PRAGMA incremental_vacuum").fetchall()
    return int(conn.execute("PRAGMA freelist_count").fetchone()[0])


def translator(path: Path) -> Callable[[Exception], Exception]:
    """SQLite's errors as ours: a damaged file is an outage to repair, named in one sentence;
    a value SQLite refuses is the request's; a full disk or an I/O error is an outage its
    callers may wait out."""

    def translate(exc: Exception) -> Exception:
        if isinstance(exc, sqlite3.DatabaseError) and exc.sqlite_errorname in _DAMAGED:
            return Unavailable(
                f"the SQLite store {path} is damaged ({exc}): restore it from a backup, or "
                "move it aside to start with an empty store"
            )
        if isinstance(exc, sqlite3.DataError):
            return ValueRefused(str(exc))
        if isinstance(exc, sqlite3.OperationalError):
            # A full disk, an I/O error, a lock held elsewhere: writes can be tried again.
            return Unavailable(f"the SQLite store {path} cannot take writes now: {exc}")
        return exc

    return translate


class _WriterConn(SqliteConn):
    def close(self) -> None:
        self.raw.close()


class _AioReader:
    dialect: Dialect = SQLITE

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        # One trip to the connection's thread (execute, fetch and close there together).
        return list(await self._conn.execute_fetchall(sql, tuple(args)))


class SqliteDatabase:
    def __init__(self, path: Path, readers: int = READERS) -> None:
        self.path = path
        self._lock = ExclusiveFile(path.with_name(path.name + ".lock"))
        self._translate = translator(path)
        self.writer = GroupWriter(
            self._connect_writer, _BEGIN_WRITE, "sqlite", translate=self._translate
        )
        self._readers = readers
        self._idle: asyncio.Queue[aiosqlite.Connection] | None = None
        self._all: list[aiosqlite.Connection] = []
        self._ending: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def readers(self) -> int:
        """How many reads may run at once."""
        return self._readers

    def _connect_writer(self) -> _WriterConn:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.row_factory = sqlite3.Row
        _pragmas(conn)
        return _WriterConn(conn)

    async def open(self) -> None:
        if self._idle is not None:
            raise RuntimeError("database already open")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            await self.writer.run_once(lambda conn: migrate(conn, _BEGIN_WRITE, str(self.path)))
            self.writer.start()
            self._idle = asyncio.Queue()
            for _ in range(self._readers):
                conn = await self._connect_reader()
                self._all.append(conn)
                self._idle.put_nowait(conn)
        except BaseException:
            # Whoever failed to open a store does not close it: what it holds ends here.
            await self.aclose()
            raise

    async def reclaim(self) -> None:
        """Free pages back to the file system, a few at a time (each step a short write of its
        own, so the writer is never held long), then the WAL checkpointed."""
        left = await self.writer.submit(_vacuum_step)
        # Bounded by what was free at the start: pages other writes free meanwhile wait for
        # the next pass rather than keep this one going.
        for _ in range(left // VACUUM_PAGES + 1):
            if not left:
                break
            left = await self.writer.submit(_vacuum_step)
        await self.writer.run_once(_checkpoint)

    def _take_lock(self) -> None:
        """One process writes a SQLite store: a second daemon naming it with `--store` (from
        another data directory) would resume the first one's runs and submit their jobs again."""
        try:
            self._lock.acquire()
        except Locked as exc:
            raise StoreInUse(
                f"the SQLite store {self.path} is in use by another workflowd ({exc.who}); stop "
                "it or choose another --store"
            ) from None

    async def _connect_reader(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.execute("PRAGMA query_only=ON")
        return conn

    @asynccontextmanager
    async def reader(self, snapshot: bool = True) -> AsyncIterator[Reader]:
        """A pooled connection; with `snapshot`, inside one read transaction (one consistent
        view for a read of several statements)."""
        if self._closed or self._idle is None:
            raise Unavailable("the store is closed")
        conn = await self._idle.get()
        begin = asyncio.ensure_future(conn.execute("BEGIN")) if snapshot else None
        try:
            if begin is not None:
                await asyncio.shield(begin)
            yield _AioReader(conn)
        except sqlite3.Error as exc:
            ours = self._translate(exc)
            if ours is exc:
                raise
            raise ours from exc
        finally:
            if begin is None:
                self._idle.put_nowait(conn)
            else:
                # Statements run on the connection's own thread in the order they were sent,
                # even those of a caller cancelled meanwhile (a watcher that went away): the
                # transaction is ended after them, before anyone else gets the connection.
                ending = asyncio.create_task(self._end_read(conn, begin))
                self._ending.add(ending)
                ending.add_done_callback(self._ending.discard)

    async def _end_read(self, conn: aiosqlite.Connection, begin: asyncio.Future[Any]) -> None:
        assert self._idle is not None
        try:
            await begin
            await conn.execute("COMMIT")
        except sqlite3.Error:
            log.exception("a read transaction could not be ended; reopening its connection")
            await conn.close()
            self._all.remove(conn)
            conn = await self._connect_reader()
            self._all.append(conn)
        self._idle.put_nowait(conn)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*self._ending)
        await self.writer.aclose()
        for conn in self._all:
            await conn.close()
        self._lock.release()
