"""Datasets for people: load CSV and Parquet, list, describe, sample."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

import duckdb

from tests.dataplane.dp_support import EVENTS_CSV, PlaneFactory, Running


async def test_load_csv_then_list_describe_and_sample(dp: Running) -> None:
    loaded = await dp.client.load_csv("events", EVENTS_CSV)
    assert loaded["dataset_name"] == "events"
    assert loaded["kind"] == "table"
    assert loaded["row_count"] == 100
    assert loaded["columns"] == [
        {"name": "event_id", "type": "BIGINT"},
        {"name": "user_id", "type": "BIGINT"},
        {"name": "event_type", "type": "VARCHAR"},
        {"name": "amount", "type": "DOUBLE"},
    ]
    assert [s["row_count"] for s in loaded["snapshots"]] == [100]
    assert dp.query("SELECT sum(event_id) FROM company_data.events") == [(5050,)]

    _, listed = await dp.client.request("GET", "/datasets")
    assert [
        (d["dataset_id"], d["dataset_name"], d["kind"], d["row_count"]) for d in listed["records"]
    ] == [(loaded["dataset_id"], "events", "table", 100)]
    _, by_id = await dp.client.request("GET", f"/datasets/{loaded['dataset_id']}")
    assert by_id == loaded
    _, sample = await dp.client.request("GET", "/datasets/events/sample?limit=2")
    assert sample["columns"] == ["event_id", "user_id", "event_type", "amount"]
    assert sample["rows"] == [[1, 1, "view", 1.5], [2, 2, "view", 3.0]]


async def test_load_parquet_with_types_that_are_not_json(dp: Running, tmp_path: Path) -> None:
    path = tmp_path / "typed.parquet"
    with duckdb.connect() as con:
        con.execute(
            "COPY (SELECT i AS id, DATE '2026-01-01' + i::INTEGER AS day,"
            " (i * 1.25)::DECIMAL(10, 2) AS price, [i, i + 1] AS pair,"
            " {'k': i} AS obj, NULL::VARCHAR AS nothing FROM range(1, 2001) t(i))"
            f" TO '{path}' (FORMAT parquet)"
        )
    status, loaded = await dp.client.request(
        "POST", "/datasets/typed/load?format=parquet", data=path.read_bytes()
    )
    assert status == 200, loaded
    assert loaded["row_count"] == 2000
    types = {c["name"]: c["type"] for c in loaded["columns"]}
    assert types["day"] == "DATE"
    assert types["price"] == "DECIMAL(10,2)"
    assert types["pair"] == "BIGINT[]"
    prices = sum(Decimal(i * 125).scaleb(-2) for i in range(1, 2001))
    last_day = dt.date(2026, 1, 1) + dt.timedelta(days=2000)
    assert dp.query("SELECT sum(price), max(day), sum(pair[2]) FROM company_data.typed") == [
        (prices, last_day, sum(range(2, 2002)))
    ]
    _, sample = await dp.client.request("GET", "/datasets/typed/sample?limit=1")
    assert sample["rows"] == [[1, "2026-01-02", "1.25", [1, 2], {"k": 1}, None]]


async def test_loading_again_needs_replace(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    status, problem = await dp.client.request(
        "POST", "/datasets/events/load?format=csv", data=b"a\n1\n"
    )
    assert status == 409
    assert "replace=true" in problem["detail"]
    status, replaced = await dp.client.request(
        "POST", "/datasets/events/load?format=csv&replace=true", data=b"a\n1\n2\n"
    )
    assert status == 200
    assert replaced["row_count"] == 2
    assert len(replaced["snapshots"]) == 2
    assert dp.query("SELECT sum(a) FROM company_data.events") == [(3,)]


async def test_bad_loads_are_400(start_plane: PlaneFactory) -> None:
    dp = await start_plane(max_upload_bytes=64)
    for path, body, detail in [
        ("/datasets/bad name/load", b"a\n1\n", "must match"),
        ("/datasets/123/load", b"a\n1\n", "all digits"),
        ("/datasets/x/load?format=xlsx", b"a\n1\n", "format must be"),
        ("/datasets/x/load?replace=maybe", b"a\n1\n", "replace must be"),
        ("/datasets/x/load?format=parquet", b"not parquet", "cannot read"),
        ("/datasets/x/load", b"a\n" + b"1\n" * 100, "larger than 64 bytes"),
    ]:
        status, problem = await dp.client.request("POST", path, data=body)
        assert status == 400, (path, problem)
        assert detail in problem["detail"], problem
    _, listed = await dp.client.request("GET", "/datasets")
    assert listed == {"records": []}
    assert list((dp.data_dir / ".uploads").iterdir()) == []


async def test_files_larger_than_the_json_body_cap_load(start_plane: PlaneFactory) -> None:
    dp = await start_plane(max_body_bytes=1024)
    body = "n,label\n" + "".join(f"{i},row-{i}\n" for i in range(80_000))
    assert len(body) > 1 << 20
    status, loaded = await dp.client.request(
        "POST", "/datasets/big/load", data=io.BytesIO(body.encode())
    )
    assert status == 200, loaded
    assert loaded["row_count"] == 80_000
    assert dp.query("SELECT sum(n), count(DISTINCT label) FROM company_data.big") == [
        (sum(range(80_000)), 80_000)
    ]
