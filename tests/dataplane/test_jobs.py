"""Each job type end to end over HTTP, with the resulting data read back from DuckDB."""

from __future__ import annotations

import uuid

from tests.dataplane.dp_support import EVENTS_CSV, Running


async def test_materialize_view_from_select_and_dataset_name(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    job = await dp.client.run(
        "materialize-view",
        {
            "nql": "SELECT user_id, COUNT(1) AS n FROM company_data.events GROUP BY user_id",
            "dataset_name": "per_user",
        },
    )
    assert job["state"] == "completed", job
    result = job["result"]
    assert result["created"] is True
    assert result["dataset_name"] == "per_user"
    assert isinstance(result["dataset_id"], int)
    assert isinstance(result["snapshot_id"], int)
    assert uuid.UUID(result["recalculation_id"])
    assert result["row_count"] == 7
    assert dp.query("SELECT sum(n) FROM company_data.per_user") == [(100,)]
    assert job["ended_at"] is not None
    assert job["ended_at"].endswith("Z")


async def test_create_materialized_view_statement_keeps_options(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    nql = (
        "CREATE MATERIALIZED VIEW buyers DISPLAY_NAME = 'Buyers' DESCRIPTION='who bought'"
        " TAGS = ('_nio_materialized_view', 'sales') EXPIRE = 'P30D' WRITE_MODE = 'overwrite'"
        " AS SELECT DISTINCT user_id FROM company_data.events WHERE event_type = 'purchase'"
    )
    job = await dp.client.run("materialize-view", {"nql": nql})
    assert job["state"] == "completed", job
    assert job["result"]["dataset_name"] == "buyers"
    expected = dp.query(
        "SELECT count(DISTINCT user_id) FROM company_data.events WHERE event_type = 'purchase'"
    )
    assert dp.query("SELECT count(*) FROM company_data.buyers") == expected
    _, described = await dp.client.request("GET", "/datasets/buyers")
    assert described["kind"] == "materialized_view"
    assert described["options"] == {
        "display_name": "Buyers",
        "description": "who bought",
        "tags": ["_nio_materialized_view", "sales"],
        "expire": "P30D",
        "write_mode": "overwrite",
    }
    assert "DISTINCT user_id" in described["query"]


async def test_existing_view_is_reused_without_refresh(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    view = {"nql": "SELECT event_id FROM company_data.events", "dataset_name": "ids"}
    first = await dp.client.run("materialize-view", view)
    await dp.client.run(
        "execute-dml", {"nql": "DELETE FROM company_data.events WHERE event_id > 10"}
    )
    again = await dp.client.run("materialize-view", view)
    assert again["result"] == {
        "dataset_id": first["result"]["dataset_id"],
        "dataset_name": "ids",
        "created": False,
        "snapshot_id": None,
        "recalculation_id": None,
        "row_count": 100,
    }
    assert dp.query("SELECT count(*) FROM company_data.ids") == [(100,)]


async def test_or_replace_rebuilds_the_view(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    first = await dp.client.run("materialize-view", {"nql": "SELECT 1 AS x", "dataset_name": "v"})
    replaced = await dp.client.run(
        "materialize-view",
        {
            "nql": "CREATE OR REPLACE MATERIALIZED VIEW v AS"
            " SELECT event_id FROM company_data.events"
        },
    )
    assert replaced["result"]["created"] is True
    assert replaced["result"]["dataset_id"] == first["result"]["dataset_id"]
    assert replaced["result"]["snapshot_id"] > first["result"]["snapshot_id"]
    assert dp.query("SELECT count(*) FROM company_data.v") == [(100,)]


async def test_refresh_takes_a_new_snapshot_with_the_new_rows(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    created = await dp.client.run(
        "materialize-view",
        {
            "nql": "SELECT event_id FROM company_data.events WHERE amount > 100",
            "dataset_name": "big",
        },
    )
    await dp.client.run(
        "execute-dml", {"nql": "INSERT INTO company_data.events VALUES (1000, 1, 'view', 999.0)"}
    )
    refreshed = await dp.client.run("refresh-materialized-view", {"dataset_name": "big"})
    assert refreshed["state"] == "completed", refreshed
    assert refreshed["result"]["snapshot_id"] > created["result"]["snapshot_id"]
    assert refreshed["result"]["recalculation_id"] != created["result"]["recalculation_id"]
    assert refreshed["result"]["row_count"] == created["result"]["row_count"] + 1
    assert dp.query("SELECT count(*) FROM company_data.big WHERE event_id = 1000") == [(1,)]
    by_id = await dp.client.run(
        "refresh-materialized-view", {"dataset_id": created["result"]["dataset_id"]}
    )
    assert by_id["result"]["dataset_name"] == "big"
    _, described = await dp.client.request("GET", "/datasets/big")
    assert [s["snapshot_id"] for s in described["snapshots"]] == [
        created["result"]["snapshot_id"],
        refreshed["result"]["snapshot_id"],
        by_id["result"]["snapshot_id"],
    ]


async def test_append_mode_adds_rows_on_refresh(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    nql = (
        "CREATE MATERIALIZED VIEW log WRITE_MODE='append' AS"
        " SELECT count(1) AS n FROM company_data.events"
    )
    await dp.client.run("materialize-view", {"nql": nql})
    await dp.client.run(
        "execute-dml", {"nql": "DELETE FROM company_data.events WHERE event_id <= 40"}
    )
    refreshed = await dp.client.run("refresh-materialized-view", {"dataset_name": "log"})
    assert refreshed["result"]["row_count"] == 2
    assert dp.query("SELECT n FROM company_data.log ORDER BY n") == [(60,), (100,)]


async def test_dml_reports_statement_type_and_rows_affected(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    cases = [
        (
            "INSERT INTO company_data.events VALUES (500, 1, 'a', 1.0), (501, 1, 'b', 2.0)",
            "INSERT",
            2,
        ),
        ("UPDATE company_data.events SET amount = 0 WHERE user_id = 3", "UPDATE", 14),
        # Known from the jobs before (not looked up again), whatever the case: the same dataset.
        ("UPDATE company_data.EVENTS SET amount = amount WHERE user_id = 3", "UPDATE", 14),
        (
            "WITH old AS (SELECT event_id FROM company_data.events WHERE event_id < 11)"
            " DELETE FROM company_data.events WHERE event_id IN (SELECT event_id FROM old)",
            "DELETE",
            10,
        ),
    ]
    for nql, statement_type, rows in cases:
        job = await dp.client.run("execute-dml", {"nql": nql})
        assert job["state"] == "completed", job
        assert job["result"]["statement_type"] == statement_type
        assert job["result"]["rows_affected"] == rows
        assert job["result"]["dataset_name"] == "events"
    assert dp.query("SELECT count(*) FROM company_data.events") == [(92,)]
    [(dataset_id,)] = dp.query("SELECT dataset_id FROM _dataplane.datasets WHERE name = 'events'")
    assert job["result"]["dataset_id"] == dataset_id
    # user 3 had 14 events, two of which (ids 3 and 10) the DELETE removed
    assert dp.query("SELECT count(*) FROM company_data.events WHERE amount = 0") == [(12,)]


async def test_numeric_id_references_resolve(dp: Running) -> None:
    loaded = await dp.client.load_csv("events", EVENTS_CSV)
    events_id = loaded["dataset_id"]
    view = await dp.client.run(
        "materialize-view",
        {
            "nql": f"SELECT event_id, 'company_data.\"{events_id}\"' AS note"
            f' FROM company_data."{events_id}" -- company_data."999"\n WHERE event_id <= 5',
            "dataset_name": "first_five",
        },
    )
    assert view["state"] == "completed", view
    assert dp.query("SELECT DISTINCT note FROM company_data.first_five") == [
        (f'company_data."{events_id}"',)
    ]
    dml = await dp.client.run(
        "execute-dml", {"nql": f'DELETE FROM company_data."{view["result"]["dataset_id"]}"'}
    )
    assert dml["result"] == {
        "dataset_id": view["result"]["dataset_id"],
        "dataset_name": "first_five",
        "statement_type": "DELETE",
        "rows_affected": 5,
    }
    missing = await dp.client.run("execute-dml", {"nql": 'DELETE FROM company_data."424242"'})
    assert missing["state"] == "failed"
    assert "424242" in missing["failures"][0]["message"]


async def test_sql_errors_fail_the_job_with_duckdbs_message(dp: Running) -> None:
    job = await dp.client.run(
        "materialize-view", {"nql": "SELECT nope FROM company_data.missing", "dataset_name": "x"}
    )
    assert job["state"] == "failed"
    assert job["result"] is None
    [failure] = job["failures"]
    assert "missing" in failure["message"]
    assert "Catalog Error" in failure["message"]
    assert failure["timestamp"].endswith("Z")
    syntax = await dp.client.run("execute-dml", {"nql": "INSERT INTO"})
    assert "Parser Error" in syntax["failures"][0]["message"]


async def test_unsupported_view_features_fail_with_a_message_saying_so(dp: Running) -> None:
    merge = await dp.client.run(
        "materialize-view",
        {
            "nql": "CREATE MATERIALIZED VIEW m AS SELECT 1 AS id"
            " MERGE ON target.id = source.id WHEN MATCHED THEN UPDATE SET id = source.id"
        },
    )
    assert merge["state"] == "failed"
    assert "MERGE ON is not supported by the local data plane" in merge["failures"][0]["message"]
    schedule = await dp.client.run(
        "materialize-view",
        {"nql": "CREATE MATERIALIZED VIEW s REFRESH_SCHEDULE='@daily' AS SELECT 1 AS x"},
    )
    assert "REFRESH_SCHEDULE is not supported" in schedule["failures"][0]["message"]


async def test_dml_must_be_exactly_one_insert_update_or_delete(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    for nql, expected in [
        ("SELECT 1", "not SELECT"),
        ("CREATE TABLE company_data.t (a INT)", "not CREATE"),
        ("DELETE FROM company_data.events; DELETE FROM company_data.events", "exactly one"),
        ("DELETE FROM company_data.events RETURNING event_id", "RETURNING"),
        ("DELETE FROM _dataplane.datasets", "company_data.<name>"),
    ]:
        job = await dp.client.run("execute-dml", {"nql": nql})
        assert job["state"] == "failed", nql
        assert expected in job["failures"][0]["message"], job["failures"]
    assert dp.query("SELECT count(*) FROM company_data.events") == [(100,)]
