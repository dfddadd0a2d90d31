"""What only the PostgreSQL store has to get right: commit order across processes, reads that
never hand a pool connection back inside a transaction, and a URL's password kept to itself."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator

import psycopg
import pytest

from tests.conftest import eventually
from tests.postgres import fresh_schema
from workflowd.domain.errors import Unavailable
from workflowd.store.postgres import READERS, PostgresDatabase, redact
from workflowd.store.sql import Conn


@pytest.fixture
async def url() -> AsyncIterator[str]:
    with fresh_schema() as schema_url:
        yield schema_url


async def sessions_where(url: str, condition: str) -> int:
    """How many server sessions match `condition` (pg_locks / pg_stat_activity), seen from a
    connection of its own."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(f"SELECT count(*) {condition}")  # our own SQL text only
        found = await cursor.fetchone()
        return int(found[0]) if found else 0


async def opened(url: str) -> PostgresDatabase:
    db = PostgresDatabase(url)
    await db.open()
    return db


async def test_sequence_order_is_commit_order_across_processes(url: str) -> None:
    """Two writers (as two daemons would have): the second one's row cannot take a later
    sequence number and commit first, or a watcher reading `seq > last_seen` would skip the
    first one's."""
    first, second = await opened(url), await opened(url)
    await first.writer.submit(
        lambda conn: conn.execute(
            conn.dialect.ddl(
                "CREATE TABLE probe (seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT)"
            )
        )
    )
    entered, release = threading.Event(), threading.Event()

    def held(conn: Conn) -> int:
        row = conn.execute("INSERT INTO probe (name) VALUES ('first') RETURNING seq").fetchone()
        entered.set()
        release.wait(30)
        return int(row["seq"])

    def other(conn: Conn) -> int:
        row = conn.execute("INSERT INTO probe (name) VALUES ('second') RETURNING seq").fetchone()
        return int(row["seq"])

    first_seq = first.writer.submit(held)
    assert await asyncio.to_thread(entered.wait, 30)
    second_seq = second.writer.submit(other)

    async def second_waits_for_the_lock() -> bool:
        return (
            await sessions_where(url, "FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            == 1
        )

    await eventually(second_waits_for_the_lock)
    async with first.reader() as reader:
        assert await reader.fetch("SELECT * FROM probe") == []
    assert not second_seq.done()  # waiting for the first transaction to end
    release.set()
    assert await second_seq > await first_seq
    await first.aclose()
    await second.aclose()


async def test_the_writer_reconnects_after_losing_its_server_connection(url: str) -> None:
    db = await opened(url)
    writer_pid = await db.writer.submit(
        lambda conn: conn.execute("SELECT pg_backend_pid() AS p").fetchone()["p"]
    )
    async with db.reader(snapshot=False) as reader:
        await reader.fetch("SELECT pg_terminate_backend(?)", (writer_pid,))
    with pytest.raises(Unavailable):
        await db.writer.submit(lambda conn: conn.execute("SELECT 1"))
    again = await db.writer.submit(lambda conn: conn.execute("SELECT 2 AS two").fetchone())
    assert again == {"two": 2}
    await db.aclose()


async def test_a_cancelled_read_leaves_no_connection_inside_a_transaction(url: str) -> None:
    db = await opened(url)

    async def slow_statement() -> None:
        async with db.reader() as reader:
            await reader.fetch("SELECT pg_sleep(30)")

    holding = asyncio.Semaphore(0)

    async def slow_caller() -> None:
        async with db.reader() as reader:
            await reader.fetch("SELECT 1 AS one")
            holding.release()
            await asyncio.Event().wait()  # holds its transaction until it is cancelled

    tasks = [asyncio.create_task(slow_statement()) for _ in range(2)]
    tasks += [asyncio.create_task(slow_caller()) for _ in range(READERS - 2)]
    for _ in range(READERS - 2):
        await holding.acquire()

    async def both_statements_running() -> bool:
        active = (
            "FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(30)%'"
            " AND pid <> pg_backend_pid()"
        )
        return await sessions_where(url, active) == 2

    await eventually(both_statements_running)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    all_held = asyncio.Barrier(READERS)

    async def fresh() -> bool:
        # The first statement of a transaction: its start is the statement's own.
        async with db.reader(snapshot=False) as reader:
            found = await reader.fetch("SELECT now() = statement_timestamp() AS fresh")
            await all_held.wait()  # every pooled connection is asked, each by one caller
            return bool(found[0]["fresh"])

    assert await asyncio.gather(*(fresh() for _ in range(READERS))) == [True] * READERS
    async with db.reader() as reader:
        assert await reader.fetch("SELECT 2 AS two") == [{"two": 2}]
    await db.aclose()


async def test_a_snapshot_read_sees_one_state(url: str) -> None:
    db = await opened(url)
    await db.writer.submit(lambda conn: conn.execute("CREATE TABLE n (v INTEGER)"))
    async with db.reader() as reader:
        before = await reader.fetch("SELECT COUNT(*) AS c FROM n")
        await db.writer.submit(lambda conn: conn.execute("INSERT INTO n (v) VALUES (1)"))
        after = await reader.fetch("SELECT COUNT(*) AS c FROM n")
    assert before == after == [{"c": 0}]
    async with db.reader(snapshot=False) as reader:
        assert await reader.fetch("SELECT COUNT(*) AS c FROM n") == [{"c": 1}]
    await db.aclose()


async def test_percent_signs_and_question_marks_are_our_placeholders_only(url: str) -> None:
    db = await opened(url)
    async with db.reader() as reader:
        found = await reader.fetch("SELECT ? AS v WHERE 'a%b' LIKE 'a%'", ("x",))
    assert found == [{"v": "x"}]
    await db.aclose()


def test_redact_hides_passwords() -> None:
    assert redact("postgresql://u:s3cret@db:5433/w") == "postgresql://u:***@db:5433/w"
    assert redact("postgresql://db/w?password=s3cret&sslmode=require") == (
        "postgresql://db/w?password=***&sslmode=require"
    )
    assert redact("postgresql://u@db/w") == "postgresql://u@db/w"


async def test_an_unreachable_server_is_one_sentence_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    db = PostgresDatabase("postgresql://someone:s3cret@127.0.0.1:1/w")
    with pytest.raises(Unavailable) as info:
        await db.open()
    message = info.value.message
    assert "127.0.0.1:1" in message
    assert "\n" not in message
    assert "s3cret" not in message
    assert "s3cret" not in caplog.text
    await db.aclose()
