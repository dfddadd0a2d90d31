"""Bad input, idempotency, listing, auth and tenancy over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from dataplane.auth import TokenTable
from tests.dataplane.dp_support import EVENTS_CSV, Client, PlaneFactory, Running

DML = {"type": "execute-dml", "input": {"nql": "DELETE FROM company_data.events WHERE false"}}


def assert_problem(status: int, body: Any, expected: int, detail: str) -> None:
    assert status == expected, body
    assert set(body) == {"type", "title", "status", "detail"}
    assert body["status"] == expected
    assert detail in body["detail"], body


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"type": "explode", "input": {}}', "unknown job type 'explode'"),
        (b'{"type": "execute-dml"}', "input is required"),
        (b'{"type": "execute-dml", "input": {}}', "input.nql is required"),
        (b'{"type": "execute-dml", "input": {"nql": 42}}', "input.nql must be a string"),
        (b'{"type": "execute-dml", "input": {"nql": "x", "extra": 1}}', "unknown input field"),
        (b'{"type": "refresh-materialized-view", "input": {}}', "exactly one of"),
        (b'{"type": "refresh-materialized-view", "input": {"dataset_id": "7"}}', "integer"),
        (b'{"type": "materialize-view", "input": {"nql": "x", "dataset_name": "a b"}}', "match"),
        (b'{"type": "execute-dml", "input": {"nql": "x"}, "tags": "t"}', "tags must be a list"),
        (b'{"type": "execute-dml", "input": {"nql": "x"}, "metadata": {"a": 1}}', "metadata"),
        (b'{"type": "execute-dml", "input": {"nql": "x"}, "colour": 1}', "unknown field"),
    ],
)
async def test_bad_submissions_are_400_problems(dp: Running, body: bytes, detail: str) -> None:
    status, problem = await dp.client.request("POST", "/jobs", data=body)
    assert_problem(status, problem, 400, detail)


async def test_oversize_body_is_a_400_problem(start_plane: PlaneFactory) -> None:
    running = await start_plane(max_body_bytes=1024)
    body = {"type": "execute-dml", "input": {"nql": "SELECT 1 -- " + "x" * 2000}}
    status, problem = await running.client.request("POST", "/jobs", json=body)
    assert_problem(status, problem, 400, "too large")


async def test_bad_query_parameters_and_unknown_ids(dp: Running) -> None:
    for path, expected, detail in [
        ("/jobs?per_page=0", 400, "per_page"),
        ("/jobs?per_page=501", 400, "per_page"),
        ("/jobs?offset=x", 400, "offset"),
        ("/jobs?order_by=sideways", 400, "order_by"),
        ("/jobs?state=sleeping", 400, "unknown state"),
        ("/jobs/6d1c1cf5-0dc1-4d1d-a7d4-3d0a4f3f1b1a", 404, "no job"),
        ("/jobs/not-a-uuid", 404, "no job"),
        ("/datasets/nothing", 404, "no dataset"),
        ("/nowhere", 404, "Not Found"),
    ]:
        status, problem = await dp.client.request("GET", path)
        assert_problem(status, problem, expected, detail)
    status, problem = await dp.client.request(
        "POST", "/jobs/6d1c1cf5-0dc1-4d1d-a7d4-3d0a4f3f1b1a/cancel"
    )
    assert_problem(status, problem, 404, "no job")


async def test_idempotency_replay_returns_the_job_and_conflict_is_409(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    body = {**DML, "idempotency_key": "run-1:0", "tags": ["t"], "metadata": {"a": "b"}}
    status, first = await dp.client.request("POST", "/jobs", json=body)
    assert status == 201
    status, replay = await dp.client.request("POST", "/jobs", json=body)
    assert status == 200
    assert replay["job_id"] == first["job_id"]
    changed = {**body, "metadata": {"a": "c"}}
    status, problem = await dp.client.request("POST", "/jobs", json=changed)
    assert_problem(status, problem, 409, "different request body")
    await dp.client.wait(first["job_id"])
    _, listed = await dp.client.request("GET", "/jobs")
    assert listed["total_records"] == 1


async def test_listing_filters_pages_and_orders(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    jobs = []
    for index in range(5):
        run_id = "run-a" if index < 3 else "run-b"
        job = await dp.client.submit(
            "execute-dml",
            DML["input"],
            tags=["workflow_enqueued"] if index % 2 == 0 else [],
            metadata={"workflow_run_id": run_id, "task_name": f"t{index}"},
        )
        jobs.append(await dp.client.wait(job["job_id"]))
    ids = [job["job_id"] for job in jobs]

    async def listed(query: str) -> dict[str, Any]:
        status, body = await dp.client.request("GET", f"/jobs?{query}")
        assert status == 200, body
        return dict(body)

    page = await listed("per_page=2&offset=2&order_by=created_at_asc")
    assert [j["job_id"] for j in page["records"]] == ids[2:4]
    assert (page["current_page"], page["total_pages"], page["total_records"]) == (2, 3, 5)
    newest_first = await listed("")
    assert [j["job_id"] for j in newest_first["records"]] == ids[::-1]
    assert (await listed("tag=workflow_enqueued"))["total_records"] == 3
    assert (await listed("workflow_run_id=run-b"))["total_records"] == 2
    assert (await listed("state=completed&state=failed&type=execute-dml"))["total_records"] == 5
    assert (await listed("state=pending"))["total_records"] == 0
    chosen = await listed(f"ids={ids[0]},{ids[4]}&order_by=created_at_asc")
    assert [j["job_id"] for j in chosen["records"]] == [ids[0], ids[4]]
    updated = await listed("order_by=updated_at_desc&per_page=1")
    assert updated["records"][0]["job_id"] == ids[-1]
    # The documented maximum of 500 ids (an 18 KB request line) is accepted; unknown ids are
    # simply absent.
    many = [*ids, *(str(uuid.uuid4()) for _ in range(495))]
    assert len(",".join(many)) > 18_000
    assert (await listed(f"ids={','.join(many)}&per_page=500"))["total_records"] == 5


async def test_tokens_map_to_companies_that_cannot_see_each_other(
    start_plane: PlaneFactory,
) -> None:
    acme = await start_plane(
        tokens=TokenTable.of({"tok-a": "acme", "tok-g": "globex"}), token="tok-a"
    )
    globex_headers = {"Authorization": "Bearer tok-g"}
    await acme.client.load_csv("events", EVENTS_CSV)
    job = await acme.client.run("materialize-view", {"nql": "SELECT 1 AS x", "dataset_name": "v"})
    url = f"{acme.client.url}/jobs/{job['job_id']}"
    async with acme.client.session.get(url, headers=globex_headers) as response:
        assert response.status == 404
    async with acme.client.session.get(acme.client.url + "/jobs") as response:
        assert response.status == 401
        assert response.content_type == "application/problem+json"
    async with acme.client.session.get(acme.client.url + "/healthz") as response:
        assert (await response.json())["status"] == "ok"
    globex = Client(acme.client.url, acme.client.session, "tok-g")
    foreign = await globex.run("execute-dml", {"nql": "DELETE FROM company_data.events"})
    assert foreign["state"] == "failed"
    assert "no dataset 'events'" in foreign["failures"][0]["message"]
    by_id = await globex.run(
        "execute-dml", {"nql": f'DELETE FROM company_data."{job["result"]["dataset_id"]}"'}
    )
    assert by_id["state"] == "failed"
    _, visible = await globex.request("GET", "/datasets")
    assert visible == {"records": []}
    assert acme.query("SELECT count(*) FROM company_data.events", company="acme") == [(100,)]
