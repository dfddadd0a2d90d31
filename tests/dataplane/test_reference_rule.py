"""User NQL reaches datasets in company_data only: not the jobs journal, not the catalog, not
the server's settings, however the reference is spelled."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.dataplane.dp_support import EVENTS_CSV, PlaneFactory, Running

TABLE = "this statement reads the table"
SYSTEM = "this statement calls the system table function"
CALL = "is not allowed in NQL"
CATALOG = "DESCRIBE and SHOW read the database catalog"

VIEW_BYPASSES = [
    ("SELECT * FROM _dataplane.datasets", f"{TABLE} _dataplane.datasets"),
    ('SELECT * FROM "_dataplane"."datasets"', f"{TABLE} _dataplane.datasets"),
    ('SELECT * FROM "_DATAPLANE"."DATASETS"', f"{TABLE} _dataplane.datasets"),
    ("select row_count from _DataPlane.Snapshots", f"{TABLE} _dataplane.snapshots"),
    ('SELECT * FROM "default"._dataplane.datasets', f"{TABLE} _dataplane.datasets"),
    ("FROM _dataplane.datasets", TABLE),
    ("TABLE _dataplane.snapshots", TABLE),
    ("WITH x AS (SELECT * FROM _dataplane.datasets) SELECT * FROM x", TABLE),
    ("WITH company_data AS (SELECT 1) SELECT * FROM _dataplane.datasets", TABLE),
    (
        "SELECT * FROM company_data.events WHERE event_id IN"
        " (SELECT count(*) FROM _dataplane.datasets)",
        TABLE,
    ),
    # DuckDB folds this from table statistics: its optimized plan has no scan left to see.
    ("SELECT (SELECT max(dataset_id) FROM _dataplane.datasets) AS n", TABLE),
    ("SELECT * FROM company_data.events, LATERAL (SELECT * FROM _dataplane.datasets) j", TABLE),
    ("SELECT * FROM histogram('_dataplane.datasets', kind)", TABLE),
    ("SELECT * FROM (PIVOT _dataplane.datasets ON kind USING count(*))", TABLE),
    ("SUMMARIZE _dataplane.datasets", TABLE),
    ("SELECT * FROM duckdb_settings()", f"{SYSTEM} duckdb_settings()"),
    ("FROM system.main.duckdb_settings()", f"{SYSTEM} duckdb_settings()"),
    ("SELECT * FROM duckdb_databases()", f"{SYSTEM} duckdb_databases()"),
    ("SELECT * FROM duckdb_extensions()", f"{SYSTEM} duckdb_extensions()"),
    ("SELECT * FROM duckdb_tables()", f"{SYSTEM} duckdb_tables()"),
    ("SELECT * FROM duckdb_columns()", f"{SYSTEM} duckdb_columns()"),
    ("SELECT * FROM duckdb_views()", f"{SYSTEM} duckdb_views()"),
    ("SELECT * FROM duckdb_secrets()", f"{SYSTEM} duckdb_secrets()"),
    ("SELECT * FROM which_secret('s3://bucket/x', 's3')", f"{SYSTEM} which_secret()"),
    ("SELECT * FROM pragma_database_size()", f"{SYSTEM} pragma_database_size()"),
    ("SELECT * FROM pragma_table_info('_dataplane.datasets')", f"{SYSTEM} pragma_table_info()"),
    ("SELECT * FROM information_schema.tables", SYSTEM),
    ("SELECT * FROM pg_catalog.pg_class", SYSTEM),
    ("SELECT pg_get_viewdef(1) AS v", SYSTEM),
    ("SHOW TABLES", SYSTEM),
    ("SELECT * FROM test_all_types()", f"{SYSTEM} test_all_types()"),
    ("DESCRIBE _dataplane.datasets", CATALOG),
    ("SELECT * FROM (DESC _dataplane.datasets)", CATALOG),
    ("SELECT current_setting('temp_directory') AS t", f"current_setting() {CALL}"),
    ("SELECT CAST(current_setting('temp_directory') AS INT) AS t", f"current_setting() {CALL}"),
    ("SELECT \"CURRENT_SETTING\"('threads') AS t", f"current_setting() {CALL}"),
    ("SELECT 'memory_limit'.current_setting() AS t", f"current_setting() {CALL}"),
    ("SELECT system.main.current_setting /* c */ ('threads') AS t", f"current_setting() {CALL}"),
    ("SELECT current_database() AS d", f"current_database() {CALL}"),
    ("SELECT version() AS v", f"version() {CALL}"),
    ("SELECT * FROM query('SELECT * FROM _dataplane.datasets')", f"query() {CALL}"),
    ("SELECT * FROM query_table('_dataplane.datasets')", f"query_table() {CALL}"),
    (
        "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
        f"json_execute_serialized_sql() {CALL}",
    ),
]

DML_BYPASSES = [
    "INSERT INTO company_data.events SELECT 0, name, kind, 0 FROM _dataplane.datasets",
    "UPDATE company_data.events SET user_id = (SELECT max(name) FROM _dataplane.datasets)",
    "UPDATE company_data.events SET amount = (SELECT max(dataset_id) FROM _dataplane.datasets)",
    "DELETE FROM company_data.events WHERE event_id IN (SELECT dataset_id FROM _dataplane.datasets)",
    "DELETE FROM company_data.events USING _dataplane.datasets d WHERE d.dataset_id > 0",
    "WITH j AS (SELECT * FROM _dataplane.datasets) INSERT INTO company_data.events SELECT 1, name, 'x', 1 FROM j",
    "INSERT INTO company_data.events SELECT 1, current_setting('temp_directory'), 'x', 1",
    "INSERT INTO company_data.events SELECT 1, column_name, 'x', 1 FROM (DESCRIBE _dataplane.datasets)",
    "INSERT INTO company_data.events SELECT 1, name, value, 1 FROM duckdb_settings()",
    "INSERT INTO company_data.events SELECT 1, path, 'x', 1 FROM duckdb_databases()",
    "INSERT INTO company_data.events (event_id, user_id) VALUES (1, current_setting('temp_directory'))",
    "UPDATE company_data.events SET user_id = j.name FROM _dataplane.datasets j",
]

ALLOWED_VIEWS = [
    "WITH x AS (SELECT * FROM company_data.events) SELECT count(*) AS n FROM x",
    'SELECT * FROM Company_Data."EVENTS" WHERE event_id < 3',
    "SELECT event_id FROM company_data.events WHERE user_id IN"
    " (SELECT user_id FROM company_data.events WHERE amount > 145)",
    "SELECT i FROM range(3) t(i) UNION ALL SELECT * FROM generate_series(5, 6)",
    "SELECT unnest([1, 2, 3]) AS x",
    "SELECT * FROM unnest([1, 2]) t(x)",
    "SELECT * FROM (VALUES (1, 'a'), (2, 'b')) v(n, s)",
    "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 5) FROM r",
    "SELECT user_id, sum(amount) OVER (PARTITION BY user_id) AS s FROM company_data.events"
    " QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY event_id) = 1",
    "SELECT 'current_setting(x)' AS s -- query('SELECT 1')\n",
    "SELECT current_date AS today, 'x'.upper() AS shout",
    "SELECT a.event_id FROM company_data.events a JOIN company_data.events b USING (event_id)",
]


async def test_views_cannot_reach_beyond_company_data(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    for nql, phrase in VIEW_BYPASSES:
        job = await dp.client.run("materialize-view", {"nql": nql, "dataset_name": "escaped"})
        assert job["state"] == "failed", (nql, job)
        message = job["failures"][0]["message"]
        assert phrase in message, (nql, message)
        assert str(dp.data_dir) not in message
    _, datasets = await dp.client.request("GET", "/datasets")
    assert [d["dataset_name"] for d in datasets["records"]] == ["events"]


async def test_dml_cannot_reach_beyond_company_data(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    before = dp.query("SELECT * FROM company_data.events ORDER BY event_id")
    for nql in DML_BYPASSES:
        job = await dp.client.run("execute-dml", {"nql": nql})
        assert job["state"] == "failed", (nql, job)
        message = job["failures"][0]["message"]
        assert "NQL may read and write only datasets in company_data" in message or CALL in message
    assert dp.query("SELECT * FROM company_data.events ORDER BY event_id") == before


async def test_ordinary_queries_still_run(dp: Running) -> None:
    loaded = await dp.client.load_csv("events", EVENTS_CSV)
    for index, nql in enumerate(ALLOWED_VIEWS):
        job = await dp.client.run("materialize-view", {"nql": nql, "dataset_name": f"ok{index}"})
        assert job["state"] == "completed", (nql, job["failures"])
        assert [(job["result"]["row_count"],)] == dp.query(f"SELECT count(*) FROM ({nql})"), nql
    by_id = await dp.client.run(
        "execute-dml",
        {
            "nql": f'UPDATE company_data."{loaded["dataset_id"]}" SET amount = 0'
            " WHERE event_id IN (SELECT i FROM range(1, 4) t(i))"
            " AND user_id = (SELECT max(user_id) FROM company_data.events WHERE event_id = 1)"
        },
    )
    assert by_id["state"] == "completed", by_id["failures"]
    assert by_id["result"]["rows_affected"] == 1


@pytest.mark.parametrize(
    ("stored", "phrase"),
    [
        ("SELECT count(*) AS n FROM _dataplane.datasets", f"{TABLE} _dataplane.datasets"),
        (
            "SELECT count(*) AS n FROM company_data.events; DELETE FROM company_data.events",
            "expected exactly one statement, found 2",
        ),
    ],
)
async def test_a_stored_view_is_checked_again_when_refreshed(
    start_plane: PlaneFactory, tmp_path: Path, stored: str, phrase: str
) -> None:
    first = await start_plane(tmp_path / "d")
    await first.client.load_csv("events", EVENTS_CSV)
    view = await first.client.run(
        "materialize-view",
        {"nql": "SELECT count(*) AS n FROM company_data.events", "dataset_name": "counts"},
    )
    assert view["state"] == "completed"
    await first.plane.aclose()
    # As if an older data plane, without the rule, had stored this view.
    with duckdb.connect(str(tmp_path / "d" / "default.duckdb")) as con:
        con.execute("UPDATE _dataplane.datasets SET query = ? WHERE name = 'counts'", [stored])
    second = await start_plane(tmp_path / "d")
    refreshed = await second.client.run("refresh-materialized-view", {"dataset_name": "counts"})
    assert refreshed["state"] == "failed"
    assert phrase in refreshed["failures"][0]["message"]
    assert second.query("SELECT n FROM company_data.counts") == [(100,)]
    assert second.query("SELECT count(*) FROM company_data.events") == [(100,)]
