"""Malformed requests are 400 problems that say what was wrong and where, never 500s."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.dataplane.dp_support import EVENTS_CSV, Running

MAX = 2**63 - 1
DML = '{"type": "execute-dml", "input": {"nql": "DELETE FROM company_data.events WHERE false"}'


async def _no_jobs(dp: Running) -> None:
    _, listed = await dp.client.request("GET", "/jobs")
    assert listed["total_records"] == 0


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "more than 32 levels deep"),
        (DML.encode() + b', "metadata": {"a": ' + b"[" * 40 + b"]" * 40 + b"}}", "32 levels"),
        (b'{"type": NaN}', "NaN is not a JSON value"),
        (DML.encode() + b', "tags": [Infinity]}', "Infinity is not a JSON value"),
        (DML.encode() + b', "tags": [' + b"7" * 5000 + b"]}", "not valid JSON"),
        (b'{"type": "execute-dml", "input": {"nql": "x\\u00e9\\ud800"}}', "input.nql"),
        (b'{"type": "execute-dml", "input": {"nql": "SELECT \'\\u0000\'"}}', "input.nql"),
        (DML.encode() + b', "idempotency_key": "k\\udfff"}', "idempotency_key contains"),
        (DML.encode() + b', "idempotency_key": "\\u0000"}', "idempotency_key contains a NUL"),
        (DML.encode() + b', "tags": ["ok", "\\ud800"]}', "tags[1] contains a lone surrogate"),
        (DML.encode() + b', "tags": ["a\\u0000b"]}', "tags[0] contains a NUL character at"),
        (DML.encode() + b', "metadata": {"run": "\\udbff"}}', "metadata.run contains"),
        (DML.encode() + b', "metadata": {"\\ud800": "x"}}', "a field name in metadata"),
        (
            b'{"type": "execute-dml", "input": {"nql": "x", "compute_pool_id": "\\ud800"}}',
            "input.compute_pool_id contains a lone surrogate (U+D800) at character 0",
        ),
        (
            b'{"type": "refresh-materialized-view", "input": {"dataset_id": 10000000000000000000}}',
            f"input.dataset_id must be an integer from 1 to {MAX}",
        ),
        (b'{"type": "refresh-materialized-view", "input": {"dataset_id": 0}}', "from 1 to"),
        (
            b'{"type": "materialize-view", "input": {"nql": "SELECT 1", "dataset_name": "42"}}',
            "input.dataset_name '42' is all digits",
        ),
    ],
)
async def test_malformed_bodies_are_400_problems_naming_the_field(
    dp: Running, body: bytes, detail: str
) -> None:
    got = await dp.client.problem("POST", "/jobs", 400, data=body)
    assert detail in got
    await _no_jobs(dp)


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/jobs?offset=" + "1" + "0" * 30, f"offset must be an integer from 0 to {MAX}"),
        (f"/jobs?offset={MAX + 1}", f"from 0 to {MAX}"),
        ("/jobs?offset=1_000", "not '1_000'"),
        ("/jobs?offset=%EF%BC%91", "offset must be an integer"),  # a full-width digit one
        ("/jobs?offset=%201", "not ' 1'"),
        ("/jobs?per_page=" + "1" * 40, "per_page must be an integer from 1 to 500"),
        ("/datasets/events/sample?limit=" + "9" * 40, "limit must be an integer from 0 to 1000"),
        (
            "/jobs/events?last_event_id=" + "1" + "0" * 30,
            f"last_event_id must be an integer from 0 to {MAX}",
        ),
        ("/jobs/events?last_event_id=-1", "last_event_id"),
        ("/jobs?order_by=" + "x" * 5000, "(5000 characters)"),
    ],
)
async def test_out_of_range_query_values_are_400_with_their_bounds(
    dp: Running, path: str, detail: str
) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    got = await dp.client.problem("GET", path, 400)
    assert detail in got
    assert len(got) < 300, got


async def test_the_largest_offset_is_served(dp: Running) -> None:
    status, page = await dp.client.request("GET", f"/jobs?offset={MAX}")
    assert (status, page["records"]) == (200, [])


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("1" + "0" * 30, f"the Last-Event-ID header must be an integer from 0 to {MAX}"),
        (str(MAX + 1), f"from 0 to {MAX}"),
        ("-5", "not '-5'"),
        ("9" * 5000, "(5000 characters)"),
    ],
)
async def test_bad_last_event_id_headers_are_400(dp: Running, value: str, detail: str) -> None:
    got = await dp.client.problem("GET", "/jobs/events", 400, headers={"Last-Event-ID": value})
    assert detail in got
    assert len(got) < 300


@pytest.mark.parametrize("suffix", ["", "/sample"])
@pytest.mark.parametrize(
    ("segment", "status", "detail"),
    [
        ("%C3%A9t%C3%A9", 400, "'été' must match ^[A-Za-z0-9_]{1,256}$"),
        ("a" * 300, 400, "(300 characters) must match"),
        ("%00", 400, r"'\x00' must match"),
        ("bad-name", 400, "must match"),
        ("1" * 50, 400, f"(an id) must be an integer from 1 to {MAX}"),
        ("0", 400, "(an id) must be an integer from 1 to"),
        ("%C2%B2", 400, "must match"),  # superscript two: a digit to str.isdigit(), not to int()
        ("%EF%BC%91", 400, "must match"),  # full-width one: int() would read it as dataset 1
        ("99", 404, "no dataset 99"),
        ("nothing", 404, "no dataset 'nothing'"),
    ],
)
async def test_dataset_paths_are_validated(
    dp: Running, suffix: str, segment: str, status: int, detail: str
) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    got = await dp.client.problem("GET", f"/datasets/{segment}{suffix}", status)
    assert detail in got
    assert len(got) < 300


async def test_dataset_ids_and_names_in_paths_still_resolve(dp: Running) -> None:
    loaded = await dp.client.load_csv("events", EVENTS_CSV)
    for ref in (str(loaded["dataset_id"]), "events", "EVENTS", f"00{loaded['dataset_id']}"):
        status, described = await dp.client.request("GET", f"/datasets/{ref}")
        assert (status, described["dataset_name"]) == (200, "events"), ref


@pytest.mark.parametrize(
    ("segment", "detail"),
    [
        ("%C3%A9", "the dataset name in the path 'é' must match"),
        ("12", "the dataset name in the path '12' is all digits"),
        ("x" * 257, "(257 characters) must match"),
        ("%C2%B2", "must match"),
    ],
)
async def test_load_refuses_a_bad_name_before_reading_the_file(
    dp: Running, segment: str, detail: str
) -> None:
    got = await dp.client.problem("POST", f"/datasets/{segment}/load", 400, data=b"a\n1\n")
    assert detail in got
    assert not (dp.data_dir / ".uploads").exists(), "the body was not even stored"
    _, listed = await dp.client.request("GET", "/datasets")
    assert listed == {"records": []}


async def test_inputs_quoted_in_errors_are_cut_short(dp: Running) -> None:
    long_id = "z" * 10_000
    assert len(await dp.client.problem("GET", f"/jobs/{long_id}", 404)) < 300
    assert len(await dp.client.problem("POST", f"/jobs/{long_id}/cancel", 404)) < 300
    assert len(await dp.client.problem("GET", "/jobs?state=" + "s" * 10_000, 400)) < 300
    body = {"type": "t" * 10_000, "input": {}}
    assert len(await dp.client.problem("POST", "/jobs", 400, json=body)) < 300
    unknown = {"type": "execute-dml", "input": {"nql": "x"}, **{f"k{i}" * 30: 1 for i in range(50)}}
    detail = await dp.client.problem("POST", "/jobs", 400, json=unknown)
    assert "and 40 more" in detail
    assert len(detail) < 700
    await dp.client.load_csv("events", EVENTS_CSV)
    key = "k" * 4096
    first = json.loads(DML + "}")
    await dp.client.submit(first["type"], first["input"], idempotency_key=key)
    changed: dict[str, Any] = {**first, "idempotency_key": key, "tags": ["other"]}
    detail = await dp.client.problem("POST", "/jobs", 409, json=changed)
    assert "different request body" in detail
    assert len(detail) < 300


async def test_concurrent_loads_of_one_name_conflict_cleanly(dp: Running) -> None:
    body = ("n\n" + "".join(f"{i}\n" for i in range(20_000))).encode()

    async def load() -> tuple[int, Any]:
        return await dp.client.request("POST", "/datasets/x/load?replace=true", data=body)

    results = await asyncio.gather(*(load() for _ in range(6)))
    statuses = {status for status, _ in results}
    assert statuses <= {200, 409}, results
    assert 200 in statuses
    for status, problem in results:
        if status == 409:
            assert "at the same time" in problem["detail"]
    assert dp.query("SELECT count(*) FROM company_data.x") == [(20_000,)]


async def test_samples_are_strict_json_even_for_nan_and_infinity(dp: Running) -> None:
    await dp.client.load_csv("floats", "x\nnan\ninf\n-inf\n1.5\n")

    def strict(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    async with dp.client.session.get(dp.client.url + "/datasets/floats/sample") as response:
        sample = json.loads(await response.text(), parse_constant=strict)
    assert sample["rows"] == [["nan"], ["inf"], ["-inf"], [1.5]]
