"""Group commit, counted: writes that queue while the writer thread is busy share one
transaction (one COMMIT), and a write that fails inside that transaction is rolled back alone.

The writer is held busy by a first write whose op blocks on a `threading.Event` inside the
writer thread; everything submitted meanwhile queues up and must land in the next batch. Each
test runs on each backend (`store_url`)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest

from workflowd.domain.fairness import acting_for
from workflowd.store import make_store
from workflowd.store.face import Backend as Database
from workflowd.store.sql import Conn
from workflowd.store.writer import MAX_BATCH


def insert(name: str) -> Callable[[Conn], str]:
    def op(conn: Conn) -> str:
        conn.execute("INSERT INTO probe (name) VALUES (?)", (name,))
        return name

    return op


async def names(db: Database) -> list[str]:
    async with db.reader() as reader:
        return [row["name"] for row in await reader.fetch("SELECT name FROM probe ORDER BY id")]


class Blocker:
    """A write whose op runs in the writer thread and waits there until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, conn: Conn) -> str:
        conn.execute("INSERT INTO probe (name) VALUES ('blocker')")
        self.entered.set()
        if not self.release.wait(30):
            raise TimeoutError("the test never released the writer")
        return "blocker"

    async def hold(self, db: Database) -> asyncio.Future[str]:
        """Submit the blocking write and return once the writer thread is inside it."""
        future = db.writer.submit(self)
        assert await asyncio.to_thread(self.entered.wait, 30), "the writer never ran the op"
        return future


@pytest.fixture
async def db(store_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    store = make_store(store_url, tmp_path / "unused.db")
    await store.open()
    database = store.db
    await database.writer.submit(
        lambda conn: conn.execute(
            conn.dialect.ddl(
                "CREATE TABLE probe (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " name TEXT NOT NULL UNIQUE)"
            )
        )
    )
    yield database
    await store.aclose()


async def test_writes_queued_while_the_writer_is_busy_share_one_commit(db: Database) -> None:
    count = MAX_BATCH
    before = db.writer.commits
    blocker = Blocker()
    held = await blocker.hold(db)
    writes = [db.writer.submit(insert(f"w{i}")) for i in range(count)]
    # Nothing committed yet, and no caller resumed before its commit.
    assert db.writer.commits == before
    assert not any(w.done() for w in writes)
    assert await names(db) == []

    blocker.release.set()
    assert await held == "blocker"
    assert await asyncio.gather(*writes) == [f"w{i}" for i in range(count)]
    # One commit for the blocker's batch, exactly one for the writes queued behind it.
    assert db.writer.commits == before + 2
    assert await names(db) == ["blocker", *(f"w{i}" for i in range(count))]


async def test_a_batch_is_capped_and_the_rest_commits_in_the_next(db: Database) -> None:
    cap = MAX_BATCH
    count = cap + cap // 4
    before = db.writer.commits
    blocker = Blocker()
    held = await blocker.hold(db)
    writes = [db.writer.submit(insert(f"w{i}")) for i in range(count)]
    blocker.release.set()
    await held
    await asyncio.gather(*writes)
    assert db.writer.commits == before + 1 + 2  # the blocker, a full batch, then the remainder
    assert len(await names(db)) == count + 1


async def test_a_failing_change_in_a_batch_is_rolled_back_alone(db: Database) -> None:
    def fails_after_writing(conn: Conn) -> str:
        conn.execute("INSERT INTO probe (name) VALUES ('half-done')")
        raise ValueError("this change gives up after its first statement")

    before = db.writer.commits
    blocker = Blocker()
    held = await blocker.hold(db)
    batch = [
        db.writer.submit(insert("a")),
        db.writer.submit(fails_after_writing),
        db.writer.submit(insert("b")),
        db.writer.submit(insert("a")),  # UNIQUE violation: fails in the database itself
        db.writer.submit(insert("c")),
    ]
    blocker.release.set()
    await held
    results = await asyncio.gather(*batch, return_exceptions=True)

    assert results[0] == "a"
    assert isinstance(results[1], ValueError)
    assert "gives up" in str(results[1])
    assert results[2] == "b"
    assert isinstance(results[3], (sqlite3.IntegrityError, psycopg.IntegrityError))
    assert results[4] == "c"
    # The failures did not cost the batch its single commit, nor leave half their changes.
    assert db.writer.commits == before + 2
    assert await names(db) == ["blocker", "a", "b", "c"]


def as_company(company: str, submit: Callable[[], asyncio.Future[str]]) -> asyncio.Future[str]:
    """`submit()` made while acting for `company`, as the API and each run's executor do."""
    context = contextvars.copy_context()
    context.run(acting_for.set, company)
    return context.run(submit)


async def test_one_companys_backlog_delays_anothers_write_by_one_batch(db: Database) -> None:
    blocker = Blocker()
    held = await blocker.hold(db)
    backlog = [
        as_company("noisy", functools.partial(db.writer.submit, insert(f"n{i}")))
        for i in range(2 * MAX_BATCH)
    ]
    other = as_company("quiet", functools.partial(db.writer.submit, insert("q")))
    blocker.release.set()
    await held
    await other
    await asyncio.gather(*backlog)
    # The quiet company's write committed in the first batch after the blocker, with half of
    # the noisy backlog still queued (in a single queue it would have waited for all of it).
    order = await names(db)
    assert order.index("q") <= MAX_BATCH + 1
    assert [name for name in order if name.startswith("n")] == [
        f"n{i}" for i in range(2 * MAX_BATCH)
    ]


async def test_the_writer_takes_its_next_batch_while_the_event_loop_is_busy(db: Database) -> None:
    """A change queued behind a batch runs as soon as that batch commits, even while the event
    loop is held: the writer thread forms its batches itself."""
    ran = threading.Event()

    def noted(conn: Conn) -> str:
        ran.set()
        return insert("queued")(conn)

    blocker = Blocker()
    held = await blocker.hold(db)
    queued = db.writer.submit(noted)
    blocker.release.set()
    # The loop is held here (a blocking wait on its own thread) until the queued change ran.
    assert ran.wait(30), "the queued change waited for the event loop"
    assert await held == "blocker"
    assert await queued == "queued"
    assert await names(db) == ["blocker", "queued"]
