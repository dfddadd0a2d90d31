"""Cancelling jobs, and the event loop staying responsive while DuckDB works."""

from __future__ import annotations

from tests.dataplane.dp_support import EVENTS_CSV, PlaneFactory, Running, eventually

SLOW = "SELECT count(*) AS n FROM range(100000000000) t(i) WHERE i % 7 = 3"


async def _wait_state(dp: Running, job_id: str, state: str) -> None:
    async def reached() -> bool:
        _, job = await dp.client.request("GET", f"/jobs/{job_id}")
        return bool(job["state"] == state)

    await eventually(reached)


async def test_cancel_interrupts_a_running_query(dp: Running) -> None:
    # SLOW would run for hours: a job that ends after its cancel was interrupted. A cancel may
    # land between the claim (`running`) and the query's start, and then ends the job at once
    # (`cancelled`); the test goes on until one lands on a running query.
    for _ in range(5):
        job = await dp.client.submit("materialize-view", {"nql": SLOW, "dataset_name": "slow"})
        await _wait_state(dp, job["job_id"], "running")
        status, cancelling = await dp.client.request("POST", f"/jobs/{job['job_id']}/cancel")
        assert status == 200
        assert cancelling["state"] in ("pending_cancellation", "cancelled")
        done = await dp.client.wait(job["job_id"])
        assert done["state"] == "cancelled"
        assert done["ended_at"] is not None
        if cancelling["state"] == "pending_cancellation":
            break
    else:
        raise AssertionError("each of 5 cancels landed before its query began")
    _, datasets = await dp.client.request("GET", "/datasets")
    assert datasets == {"records": []}
    assert dp.query("SELECT count(*) FROM information_schema.tables WHERE table_name = 'slow'") == [
        (0,)
    ]


async def test_cancel_of_a_pending_job_means_it_never_runs(start_plane: PlaneFactory) -> None:
    dp = await start_plane(workers=1)
    await dp.client.load_csv("events", EVENTS_CSV)
    blocker = await dp.client.submit("materialize-view", {"nql": SLOW, "dataset_name": "slow"})
    await _wait_state(dp, blocker["job_id"], "running")
    queued = await dp.client.submit("execute-dml", {"nql": "DELETE FROM company_data.events"})
    status, cancelled = await dp.client.request("POST", f"/jobs/{queued['job_id']}/cancel")
    assert (status, cancelled["state"]) == (200, "cancelled")
    await dp.client.request("POST", f"/jobs/{blocker['job_id']}/cancel")
    await dp.client.wait(blocker["job_id"])
    after = await dp.client.run(
        "execute-dml", {"nql": "DELETE FROM company_data.events WHERE false"}
    )
    assert after["state"] == "completed"
    _, still = await dp.client.request("GET", f"/jobs/{queued['job_id']}")
    assert still["state"] == "cancelled"
    assert dp.query("SELECT count(*) FROM company_data.events") == [(100,)]


async def test_cancel_of_a_finished_job_changes_nothing(dp: Running) -> None:
    job = await dp.client.run("materialize-view", {"nql": "SELECT 1 AS x", "dataset_name": "v"})
    status, same = await dp.client.request("POST", f"/jobs/{job['job_id']}/cancel")
    assert status == 200
    assert same == job


async def test_event_loop_stays_responsive_during_a_long_query(start_plane: PlaneFactory) -> None:
    # One DuckDB thread for the query leaves the other core of a small machine to the loop.
    dp = await start_plane(query_threads=1)
    job = await dp.client.submit("materialize-view", {"nql": SLOW, "dataset_name": "slow"})
    await _wait_state(dp, job["job_id"], "running")
    # SLOW runs for hours: requests answered while it still runs were served beside it, not
    # after it (how fast is the bench's business, not a test's).
    for _ in range(50):
        status, _ = await dp.client.request("GET", "/healthz")
        assert status == 200
    _, still = await dp.client.request("GET", f"/jobs/{job['job_id']}")
    assert still["state"] == "running", "the query ran for the whole probe"
    await dp.client.request("POST", f"/jobs/{job['job_id']}/cancel")
    assert (await dp.client.wait(job["job_id"]))["state"] == "cancelled"
