"""The store on each backend (a SQLite file, a PostgreSQL schema): migrations, group commit,
checked transitions, time order."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.postgres import fresh_schema
from workflowd.domain.definition import Schedule
from workflowd.domain.errors import InvalidRequest, Unavailable, ValueRefused, WorkflowdError
from workflowd.domain.run import (
    IllegalTransition,
    NewRun,
    RunStatus,
    RunTaken,
    RunTrigger,
    WatchFilter,
)
from workflowd.domain.workflow import NewWorkflowVersion
from workflowd.store import Store, make_store, migrate
from workflowd.store.migrations import MIGRATIONS
from workflowd.store.runtx import RunTx
from workflowd.store.sql import Conn

NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


def never_fires(spec: Schedule, anchor: datetime, after: datetime) -> datetime | None:
    """These workflows have no schedule: the store never needs a fire instant."""
    raise AssertionError("no schedule to compute")


async def open_store(url: str) -> Store:
    store = make_store(url, Path("/nonexistent/unused.db"))
    await store.open()
    return store


async def new_run(store: Store, run_id: str) -> None:
    workflow, _ = await store.save_version(
        NewWorkflowVersion("local", "ns", "wf", "1.0.0", "spec", (), NOW), never_fires
    )
    await store.create_run(
        NewRun(
            id=run_id,
            company="local",
            workflow_id=workflow.id,
            namespace="ns",
            name="wf",
            version="1.0.0",
            trigger=RunTrigger.MANUAL,
            input={},
            created_at=NOW,
        )
    )


async def test_migrations_apply_once_and_a_newer_schema_is_refused(store_url: str) -> None:
    store = await open_store(store_url)
    await store.aclose()
    store = await open_store(store_url)
    async with store.db.reader() as reader:
        found = await reader.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert [row["version"] for row in found] == list(range(1, len(MIGRATIONS) + 1))
    await store.db.writer.submit(
        lambda conn: conn.execute("INSERT INTO schema_migrations (version) VALUES (999)")
    )
    await store.aclose()
    with pytest.raises(WorkflowdError) as info:
        await open_store(store_url)
    assert "newer than this workflowd knows" in info.value.message


def test_a_store_url_of_another_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as info:
        make_store("mysql://db/w", tmp_path / "w.db")
    assert info.value.field == "store"


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = await open_store(f"sqlite://{tmp_path}/w.db")
    await store.aclose()
    with sqlite3.connect(tmp_path / "w.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_timestamps_compare_in_time_order(store_url: str) -> None:
    """Timestamps are ISO-8601 text compared as strings: that is time order only byte-wise,
    whatever the database's own collation."""
    store = await open_store(store_url)
    stamps = [
        "2026-11-24T06:00:00.000000+00:00",
        "2026-11-24T06:00:00.000001+00:00",
        "2026-11-24T16:00:00.000000+00:00",
        "2026-11-24T6:00:00.000000+00:00",  # not ours, but shows the collation in use
        "2026-11-24Z",
        "2026-11-24a",
        "2026-11-24_",
    ]

    def write(conn: Conn) -> None:
        conn.execute(conn.dialect.ddl("CREATE TABLE stamps (at TEXT NOT NULL)"))
        for stamp in stamps:
            conn.execute("INSERT INTO stamps (at) VALUES (?)", (stamp,))

    await store.db.writer.submit(write)
    async with store.db.reader() as reader:
        ordered = [row["at"] for row in await reader.fetch("SELECT at FROM stamps ORDER BY at")]
        due = await reader.fetch(
            "SELECT at FROM stamps WHERE at <= ? ORDER BY at", ("2026-11-24T06:00:00.000001+00:00",)
        )
    await store.aclose()
    assert ordered == sorted(stamps, key=str.encode)
    assert [row["at"] for row in due] == stamps[:2]


async def test_postgres_text_columns_compare_byte_wise() -> None:
    """A database created with a linguistic collation (en_US…) must not reorder timestamps."""
    with fresh_schema() as url:
        store = await open_store(url)
        async with store.db.reader() as reader:
            found = await reader.fetch(
                "SELECT table_name, column_name, collation_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND data_type = 'text'"
            )
        await store.aclose()
    assert found
    assert [r for r in found if r["collation_name"] != "C"] == []


async def test_concurrent_writes_group_commit_and_a_failing_one_is_isolated(
    store_url: str,
) -> None:
    store = await open_store(store_url)
    await new_run(store, "r1")

    def start(tx: RunTx) -> None:
        tx.start_run(NOW)

    def illegal(tx: RunTx) -> None:
        # a run never goes back to PENDING
        tx.end_run(RunStatus.PENDING, NOW)

    def set_context(value: int) -> object:
        return lambda tx: tx.set_context({"n": value})

    futures = [store.update_run("r1", NOW, start), store.update_run("r1", NOW, illegal)]
    futures += [store.update_run("r1", NOW, set_context(i)) for i in range(200)]  # type: ignore[arg-type]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[1], IllegalTransition)
    assert [e.type.value for e in results[0]] == ["run_started"]  # type: ignore[union-attr]
    run = await store.get_run("local", "r1")
    assert run.status == RunStatus.RUNNING
    assert run.tasks == ()
    assert run.context == {"n": 199}
    events = await store.events_after("local", "r1", 0, 100)
    assert [e.seq for e in events] == [1, 2]
    await store.aclose()


async def test_writes_survive_reopening_and_other_companies_see_nothing(store_url: str) -> None:
    store = await open_store(store_url)
    await new_run(store, "r1")
    await store.aclose()
    store = await open_store(store_url)
    assert (await store.get_run("local", "r1")).status == RunStatus.PENDING
    with pytest.raises(WorkflowdError):
        await store.get_run("another-company", "r1")
    await store.join("replica-a", NOW, timedelta(minutes=1))
    assert await store.claim_runs(NOW, takeover=True, limit=10) == ["r1"]
    await store.aclose()
    with pytest.raises(WorkflowdError):
        await store.get_run("local", "r1")


async def test_a_run_adopted_elsewhere_takes_no_more_changes_from_its_old_owner() -> None:
    """Replicas share a PostgreSQL store (a SQLite store has one process: its lock)."""
    with fresh_schema() as url:
        await _adopted_elsewhere(url)


async def test_a_sqlite_store_has_one_process_at_a_time(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/w.db"
    first = await open_store(url)
    with pytest.raises(Unavailable) as info:
        await open_store(url)
    assert info.value.message == (
        f"the SQLite store {tmp_path}/w.db is in use by another workflowd (process "
        f"{os.getpid()}); stop it or choose another --store"
    )
    await first.aclose()
    again = await open_store(url)  # released with the store, and after a failed open
    await again.aclose()


async def _adopted_elsewhere(store_url: str) -> None:
    old = await open_store(store_url)
    adopter = await open_store(store_url)
    try:
        await old.join("replica-old", NOW, timedelta(0))  # its lease has run out already
        await new_run(old, "r1")
        await adopter.join("replica-new", NOW, timedelta(minutes=1))
        assert await adopter.claim_runs(NOW, takeover=False, limit=10) == ["r1"]
        assert await adopter.claim_runs(NOW, takeover=False, limit=10) == []
        assert not await old.renew(NOW, timedelta(minutes=1))

        def start(tx: RunTx) -> None:
            tx.start_run(NOW)

        with pytest.raises(RunTaken):
            await old.update_run("r1", NOW, start)
        assert (await old.get_run("local", "r1")).status == RunStatus.PENDING
        # A cancel may be asked of any replica; the owner's executor carries it out.
        await old.update_run("r1", NOW, lambda tx: tx.request_cancel("stop"), owned=False)

        def end(tx: RunTx) -> None:
            tx.end_run(RunStatus.CANCELLED, NOW, reason="stop")

        await adopter.update_run("r1", NOW, end)
        assert (await adopter.get_run("local", "r1")).status == RunStatus.CANCELLED
    finally:
        await old.aclose()
        await adopter.aclose()


async def test_a_value_the_database_refuses_is_the_callers_and_the_writer_goes_on() -> None:
    """A NUL in text is refused by PostgreSQL itself: the store says so as INVALID_ARGUMENT's
    `ValueRefused` (the API refuses such values first; this is the net below it)."""
    with fresh_schema() as url:
        store = await open_store(url)
        try:
            await new_run(store, "r1")
            with pytest.raises(ValueRefused) as info:
                await store.update_run("r1", NOW, lambda tx: tx.request_cancel("stop\0now"))
            assert "NUL" in info.value.message
            await store.update_run("r1", NOW, lambda tx: tx.request_cancel("stop now"))
            assert (await store.get_run("local", "r1")).status == RunStatus.CANCELLING
        finally:
            await store.aclose()


@pytest.mark.parametrize("where", [0, 4096])
async def test_a_damaged_sqlite_file_is_one_sentence_not_sqlites_exception(
    tmp_path: Path, where: int
) -> None:
    """Its header, or every page after the first, overwritten: opening it (or reading what is damaged) raises
    `Unavailable` naming the file and what to do."""
    path = tmp_path / "w.db"
    store = await open_store(f"sqlite://{path}")
    for i in range(50):
        await new_run(store, f"r{i}")
    await store.aclose()
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(where)
        file.write(b"\xa5" * (size - where))

    async def open_and_read() -> None:
        damaged = await open_store(f"sqlite://{path}")
        try:
            await damaged.runs_by_id([f"r{i}" for i in range(50)])
        finally:
            await damaged.aclose()

    with pytest.raises(Unavailable) as info:
        await open_and_read()
    assert info.value.message.startswith(f"the SQLite store {path} is damaged (")
    assert info.value.message.endswith(
        "restore it from a backup, or move it aside to start with an empty store"
    )


async def test_an_older_stores_events_are_numbered_per_company_when_it_is_migrated(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store an older workflowd left (the migrations before company sequences): its events
    get their company's numbers in log order, and new events go on from there."""
    before = next(i for i, m in enumerate(MIGRATIONS) if "company_sequences" in str(m[0]))
    monkeypatch.setattr(migrate, "MIGRATIONS", MIGRATIONS[:before])
    old = make_store(store_url, Path("/nonexistent/unused.db"))
    await old.db.open()
    workflow, _ = await old.save_version(
        NewWorkflowVersion("acme", "ns", "wf", "1.0.0", "spec", (), NOW), never_fires
    )

    def created(conn: Conn, run_id: str, company: str) -> None:
        """A run and its first event, as that older workflowd wrote them."""
        conn.execute(
            "INSERT INTO runs (id, company, workflow_id, namespace, name, version, status,"
            " trigger, input, created_at, last_seq) VALUES"
            " (?, ?, ?, 'ns', 'wf', '1.0.0', 'pending', 'manual', '{}', ?, 1)",
            (run_id, company, workflow.id, NOW.isoformat()),
        )
        conn.execute(
            "INSERT INTO run_events (run_id, seq, company, workflow_id, namespace, type, time,"
            " run_status) VALUES (?, 1, ?, ?, 'ns', 'run_created', ?, 'pending')",
            (run_id, company, workflow.id, NOW.isoformat()),
        )

    for i, company in enumerate(["acme", "globex", "acme", "globex", "globex", "acme"]):
        await old.db.writer.submit(
            lambda conn, i=i, company=company: created(conn, f"r{i}", company)
        )
    await old.aclose()
    monkeypatch.undo()

    store = await open_store(store_url)
    try:
        acme = await store.events_after_global("acme", WatchFilter(), 0, 100)
        globex = await store.events_after_global("globex", WatchFilter(), 0, 100)
        assert [(e.run_id, e.global_seq) for e in acme] == [("r0", 1), ("r2", 2), ("r5", 3)]
        assert [(e.run_id, e.global_seq) for e in globex] == [("r1", 1), ("r3", 2), ("r4", 3)]
        assert await store.last_company_seq("acme") == 3
        await store.update_run("r0", NOW, lambda tx: tx.request_cancel("stop"))
        assert await store.last_company_seq("acme") == 4
        assert await store.last_company_seq("globex") == 3
        logged = await store.events_since(0, 100)
        assert [position for position, _ in logged] == list(range(1, 8))
    finally:
        await store.aclose()
