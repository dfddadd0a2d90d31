"""Server-sent event streams: order, termination, late subscribers, resuming, resets."""

from __future__ import annotations

from typing import Any

import pytest

from dataplane.hub import Event, StreamClosed, Subscription
from dataplane.model import Job, JobState, JobType
from tests.dataplane.dp_support import EVENTS_CSV, PlaneFactory, Running, eventually, sse_events

SLOW = "SELECT count(*) AS n FROM range(100000000000) t(i) WHERE i % 7 = 3"
DML = {"nql": "DELETE FROM company_data.events WHERE event_id < 0"}


async def _running(dp: Running, job_id: str) -> None:
    async def is_running() -> bool:
        _, job = await dp.client.request("GET", f"/jobs/{job_id}")
        return bool(job["state"] == "running")

    await eventually(is_running)


async def _collect(dp: Running, path: str, count: int, **headers: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with dp.client.session.get(
        dp.client.url + path, headers={**dp.client.headers, **headers}
    ) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        async for event in sse_events(response, limit=count):
            events.append(event)
    return events


async def test_job_stream_is_ordered_and_ends_at_the_terminal_state(
    start_plane: PlaneFactory,
) -> None:
    dp = await start_plane(workers=1)
    await dp.client.load_csv("events", EVENTS_CSV)
    blocker = await dp.client.submit("materialize-view", {"nql": SLOW, "dataset_name": "slow"})
    await _running(dp, blocker["job_id"])
    job = await dp.client.submit("execute-dml", DML)
    async with dp.client.session.get(f"{dp.client.url}/jobs/{job['job_id']}/events") as response:
        events = sse_events(response)
        first = await anext(events)
        assert first["event"] == "job"
        assert first["data"]["state"] == "pending"
        await dp.client.request("POST", f"/jobs/{blocker['job_id']}/cancel")
        rest = [event async for event in events]
    states = [first["data"]["state"]] + [e["data"]["state"] for e in rest]
    assert states == ["pending", "running", "completed"]
    ids = [int(first["id"])] + [int(e["id"]) for e in rest]
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    assert rest[-1]["data"]["result"]["rows_affected"] == 0


async def test_late_subscriber_gets_the_current_state_and_the_stream_ends(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    job = await dp.client.run("execute-dml", DML)
    async with dp.client.session.get(f"{dp.client.url}/jobs/{job['job_id']}/events") as response:
        events = [event async for event in sse_events(response)]
    assert len(events) == 1
    assert events[0]["data"] == job


async def test_multi_job_stream_resumes_without_gap_or_repeat(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    path = "/jobs/events?tag=mine"
    received: list[dict[str, Any]] = []
    async with dp.client.session.get(dp.client.url + path) as response:
        events = sse_events(response)
        for index in range(4):
            await dp.client.submit("execute-dml", DML, tags=["mine"] if index % 2 == 0 else [])
        received += [await anext(events) for _ in range(3)]
    # The connection is dropped; jobs keep changing while nobody listens.
    submitted = [await dp.client.submit("execute-dml", DML, tags=["mine"]) for _ in range(3)]
    for job in submitted:
        await dp.client.wait(job["job_id"])
    total_changes = 5 * 3  # five tagged jobs, three changes each
    received += await _collect(
        dp, path, total_changes - len(received), **{"Last-Event-ID": received[-1]["id"]}
    )
    ids = [int(e["id"]) for e in received]
    assert ids == sorted(set(ids)), "no repeats, increasing"
    everything = await _collect(dp, path + "&last_event_id=0", total_changes)
    assert [int(e["id"]) for e in everything] == ids, "no gap"
    assert all("mine" in e["data"]["tags"] for e in received)


async def test_too_old_event_id_is_answered_with_a_reset(start_plane: PlaneFactory) -> None:
    dp = await start_plane(retain_changes=5)
    await dp.client.load_csv("events", EVENTS_CSV)
    for _ in range(4):
        await dp.client.run("execute-dml", DML)
    async with dp.client.session.get(
        dp.client.url + "/jobs/events", headers={"Last-Event-ID": "1"}
    ) as response:
        events = sse_events(response)
        reset = await anext(events)
        assert reset["event"] == "reset"
        assert "id" not in reset
        assert "not retained" in reset["data"]["reason"]
        job = await dp.client.submit("execute-dml", DML)
        live = await anext(events)
    assert live["data"]["job_id"] == job["job_id"]
    assert int(live["id"]) == 13  # 4 jobs x 3 changes, then this job's first


async def test_keepalive_comments_flow_while_idle(start_plane: PlaneFactory) -> None:
    dp = await start_plane(keepalive_s=0.05)
    async with dp.client.session.get(dp.client.url + "/jobs/events") as response:
        first = await anext(sse_events(response))
    assert first == {"comment": "keepalive"}


async def test_a_subscriber_that_falls_behind_is_closed_not_buffered() -> None:
    subscription = Subscription(lambda job: True, max_buffered=2)
    job = Job(
        job_id="j",
        type=JobType.EXECUTE_DML,
        state=JobState.PENDING,
        input={},
        idempotency_key=None,
        tags=(),
        metadata={},
        created_at="t",
        updated_at="t",
    )
    for event_id in (1, 2, 3):
        subscription.offer(Event.of(event_id, job))
    with pytest.raises(StreamClosed, match="fell behind"):
        await subscription.next(1.0)


async def test_stream_filters_by_type_and_workflow_run(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    async with dp.client.session.get(
        dp.client.url + "/jobs/events?type=execute-dml&workflow_run_id=r1"
    ) as response:
        events = sse_events(response)
        await dp.client.submit("execute-dml", DML, metadata={"workflow_run_id": "r2"})
        await dp.client.submit(
            "materialize-view",
            {"nql": "SELECT 1 AS x", "dataset_name": "v"},
            metadata={"workflow_run_id": "r1"},
        )
        wanted = await dp.client.submit("execute-dml", DML, metadata={"workflow_run_id": "r1"})
        got = [await anext(events) for _ in range(3)]
    assert {e["data"]["job_id"] for e in got} == {wanted["job_id"]}
    assert [e["data"]["state"] for e in got] == ["pending", "running", "completed"]
