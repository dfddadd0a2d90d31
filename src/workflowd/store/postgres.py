"""The PostgreSQL store: the same group-committing writer, on a psycopg connection of its own
thread (the store's change functions stay synchronous and run unchanged), and a pool of async
psycopg connections for reads. Several workflowd processes may share one database."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from workflowd.domain.errors import Unavailable, ValueRefused
from workflowd.domain.quotas import Quotas
from workflowd.store.face import Store
from workflowd.store.migrate import migrate
from workflowd.store.query import Reader
from workflowd.store.sql import POSTGRESQL, Conn, Cursor, Dialect
from workflowd.store.writer import GroupWriter

log = logging.getLogger("workflowd.store")

READERS = 4
READERS_TIMEOUT_S = 30.0
# Advisory locks of our own ("wfd" and 1, 2, apart from any the database's other users take),
# one per schema: stores in other schemas of the same database never wait on each other.
_MIGRATING = f"{0x776664 + 1}, hashtext(current_schema())"
_WRITING = f"{0x776664 + 2}, hashtext(current_schema())"
# A BIGSERIAL hands out numbers in nextval order, not commit order: with two processes writing,
# a watcher reading `global_seq > last_seen` could pass a number whose transaction commits
# later. Write transactions queue on this lock, so sequence order is commit order; a batch
# takes it once.
_BEGIN_WRITE = f"BEGIN; SELECT pg_advisory_xact_lock({_WRITING})"
_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
# Every batch tells the other replicas on this schema that the event log may have grown; the
# notification is delivered when (and only if) the batch commits.
_CHANNEL = "workflowd_log"
_NOTIFY = f"SELECT pg_notify('{_CHANNEL}', current_schema())"
_RELISTEN_S = 1.0

Connection = psycopg.Connection[DictRow]
AsyncConnection = psycopg.AsyncConnection[DictRow]


def redact(url: str) -> str:
    """`url` without its password (in the authority or as a `password=` parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _where(url: str) -> str:
    """host:port and database, as a person would name the server (never the password)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return redact(url)
    host = params.get("host") or "the local socket"
    port = params.get("port") or "5432"
    return f"{host}:{port}, database {params.get('dbname') or params.get('user') or 'postgres'}"


def _reason(exc: psycopg.Error) -> str:
    """libpq's first line, without the server address it repeats."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[0].rpartition(" failed: ")[2].removeprefix("FATAL:").strip()


def _translate(exc: Exception) -> Exception:
    """A value PostgreSQL refuses (a NUL in text, an index row too large, a number out of
    range) is the request's, not a fault of ours; a lost connection is an outage."""
    if isinstance(exc, psycopg.DataError | psycopg.errors.ProgramLimitExceeded):
        return ValueRefused(_reason(exc))
    if isinstance(exc, psycopg.OperationalError):
        return Unavailable(f"the PostgreSQL store failed: {_reason(exc)}")
    return exc


class _WriterConn:
    dialect: Dialect = POSTGRESQL

    def __init__(self, raw: Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, args: Sequence[object] = ()) -> Cursor:
        # Parameters always given (even none), so psycopg reads `%%` back as `%`.
        return self.raw.execute(POSTGRESQL.sql(sql), tuple(args))

    def close(self) -> None:
        self.raw.close()


class _PoolReader:
    dialect: Dialect = POSTGRESQL

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        cursor = await self._conn.execute(POSTGRESQL.sql(sql), tuple(args))
        return await cursor.fetchall()


class PostgresDatabase:
    def __init__(self, url: str, readers: int = READERS) -> None:
        self._url = url
        self.where = redact(url)
        self.writer = GroupWriter(
            self._connect_writer, _BEGIN_WRITE, "postgres", _NOTIFY, translate=_translate
        )
        self.listener = _Listener(url, self.where)
        self._readers = readers
        self._pool: AsyncConnectionPool[AsyncConnection] | None = None
        self._closed = False

    @property
    def readers(self) -> int:
        """How many reads may run at once."""
        return self._readers

    def _connect_writer(self) -> _WriterConn:
        try:
            # autocommit: the writer's own BEGIN, SAVEPOINT and COMMIT shape its transactions.
            raw = psycopg.connect(self._url, autocommit=True, row_factory=dict_row)
        except psycopg.Error as exc:
            raise Unavailable(
                f"cannot connect to the PostgreSQL store at {_where(self._url)}: {_reason(exc)}"
            ) from exc
        return _WriterConn(raw)

    async def open(self) -> None:
        if self._pool is not None:
            raise RuntimeError("database already open")
        try:
            await self._open()
        except BaseException:
            # Whoever failed to open a store does not close it: its connections end here.
            await self.aclose()
            raise
        log.info("store: %s", self.where)

    async def _open(self) -> None:
        await self.writer.run_once(self._migrate)
        self.writer.start()
        self.listener.start()
        self._pool = AsyncConnectionPool(
            self._url,
            connection_class=AsyncConnection,
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=self._readers,
            max_size=self._readers,
            open=False,
            name="workflowd-readers",
        )
        try:
            await self._pool.open(wait=True, timeout=READERS_TIMEOUT_S)
        except PoolTimeout as exc:
            raise Unavailable(
                f"cannot open read connections to the PostgreSQL store at {_where(self._url)}"
            ) from exc

    def _migrate(self, conn: Conn) -> None:
        # Replicas starting together: one migrates, the others wait here and then find the
        # schema current. A session lock, since each migration is a transaction of its own.
        conn.execute(f"SELECT pg_advisory_lock({_MIGRATING})")
        try:
            migrate(conn, "BEGIN", self.where)
        finally:
            conn.execute(f"SELECT pg_advisory_unlock({_MIGRATING})")

    @asynccontextmanager
    async def reader(self, snapshot: bool = True) -> AsyncIterator[Reader]:
        """A pooled connection; with `snapshot`, inside one repeatable-read transaction (one
        consistent view for a read of several statements), else one statement in autocommit."""
        if self._closed or self._pool is None:
            raise Unavailable("the store is closed")
        async with self._pool.connection() as conn:
            try:
                if snapshot:
                    await conn.execute(_BEGIN_READ)
                yield _PoolReader(conn)
            finally:
                # Read only, so a rollback ends it as a commit would, and also after an error.
                # A caller cancelled mid-statement has had it cancelled by psycopg; if this is
                # interrupted too, the pool rolls back or discards the connection on return.
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    await conn.rollback()

    async def reclaim(self) -> None:
        """Nothing to do: PostgreSQL's autovacuum makes deleted rows' space reusable."""

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.listener.aclose()
        await self.writer.aclose()
        if self._pool is not None:
            await self._pool.close()


class _Listener:
    """One connection that LISTENs for the commits of every process writing this schema, and
    an event that `wait` returns on. A lost connection is opened again; since commits may have
    gone unheard meanwhile, reconnecting wakes the waiter too (it then reads the log)."""

    def __init__(self, url: str, where: str) -> None:
        self._url = url
        self._where = where
        self._heard = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="store-listen")

    async def wait(self, timeout_s: float) -> None:
        """Until another commit is heard, or `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._heard.wait()
        except TimeoutError:
            pass
        self._heard.clear()

    async def _listen(self) -> None:
        while True:
            try:
                conn = await AsyncConnection.connect(
                    self._url, autocommit=True, row_factory=dict_row
                )
                async with conn:
                    found = await (await conn.execute("SELECT current_schema() AS s")).fetchone()
                    schema = found["s"] if found else ""
                    await conn.execute(f"LISTEN {_CHANNEL}")
                    self._heard.set()
                    async for note in conn.notifies():
                        if note.payload == schema:
                            self._heard.set()
            except psycopg.Error as exc:
                log.warning("listening to the store at %s: %s; again shortly", self._where, exc)
                self._heard.set()
                await asyncio.sleep(_RELISTEN_S)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class PostgresStore(Store):
    """Workflows, runs and events in a PostgreSQL database (one group-committing writer per
    process, a pool of readers)."""

    def __init__(self, url: str, quotas: Quotas | None = None) -> None:
        super().__init__(PostgresDatabase(url), quotas)
        self.url = redact(url)

    def shared_log(self) -> Callable[[float], Awaitable[None]] | None:
        db = self.db
        assert isinstance(db, PostgresDatabase)
        return db.listener.wait
