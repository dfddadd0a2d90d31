"""Failure messages a person can read: refused statements named as written, no control
characters."""

from __future__ import annotations

import re
from pathlib import Path

from tests.dataplane.dp_support import EVENTS_CSV, Running

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _refused(tmp: Path) -> list[tuple[str, str]]:
    """(statement, the kind its refusal must name). DuckDB's own type names would say LOAD
    for INSTALL, SET for PRAGMA and USE, CALL for CHECKPOINT, PRAGMA for IMPORT."""
    return [
        ("INSTALL httpfs", "INSTALL"),
        ("FORCE INSTALL httpfs", "FORCE INSTALL"),
        ("LOAD httpfs", "LOAD"),
        ("UPDATE EXTENSIONS", "UPDATE EXTENSIONS"),
        (f"ATTACH '{tmp}/other.duckdb' AS other", "ATTACH"),
        ("DETACH other", "DETACH"),
        (f"COPY company_data.events TO '{tmp}/out.csv'", "COPY"),
        ("COPY FROM DATABASE memory TO other", "COPY"),
        ("SET threads = 1", "SET"),
        ("RESET threads", "RESET"),
        ("PRAGMA threads = 1", "PRAGMA"),
        ("USE memory", "USE"),
        (f"EXPORT DATABASE '{tmp}/export'", "EXPORT"),
        (f"IMPORT DATABASE '{tmp}/export'", "IMPORT"),
        ("CHECKPOINT", "CHECKPOINT"),
        ("CALL pragma_version()", "CALL"),
        ("BEGIN TRANSACTION", "BEGIN"),
        ("CREATE TABLE company_data.t (a INT)", "CREATE"),
        ("DROP TABLE company_data.events", "DROP"),
        ("VACUUM", "VACUUM"),
        ("EXPLAIN SELECT 1", "EXPLAIN"),
    ]


async def test_refused_statements_are_named_as_written(dp: Running, tmp_path: Path) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    for statement, kind in _refused(tmp_path):
        dml = await dp.client.run("execute-dml", {"nql": statement})
        assert dml["failures"][0]["message"] == (
            f"execute-dml accepts one INSERT, UPDATE or DELETE, not {kind}"
        ), statement
        view = await dp.client.run("materialize-view", {"nql": statement, "dataset_name": "v"})
        assert view["failures"][0]["message"] == (
            f"a materialized view is defined by a SELECT, not {kind}"
        ), statement
    assert not (tmp_path / "out.csv").exists()
    assert not (tmp_path / "export").exists()
    assert dp.query("SELECT count(*) FROM company_data.events") == [(100,)]


async def test_failure_messages_carry_no_control_characters(dp: Running) -> None:
    # The terminal escape and bell come back inside DuckDB's own error message.
    job = await dp.client.run(
        "materialize-view",
        {
            "nql": "SELECT error('boom' || chr(27) || '[31m red' || chr(7) || chr(1)) AS x",
            "dataset_name": "v",
        },
    )
    message = job["failures"][0]["message"]
    assert "boom[31m red" in message
    assert not CONTROL.search(message), repr(message)
    cast = await dp.client.run(
        "materialize-view",
        {"nql": "SELECT CAST(chr(0) || 'x' || chr(8) AS INTEGER) AS n", "dataset_name": "w"},
    )
    message = cast["failures"][0]["message"]
    assert "Could not convert string" in message
    assert "\nLINE 1:" in message, "newlines are kept"
    assert not CONTROL.search(message), repr(message)
