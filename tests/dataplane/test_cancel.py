"""Cancelling jobs, and the event loop staying responsive while DuckDB works."""

from __future__ import annotations

import asyncio
import time

from tests.dataplane.dp_support import EVENTS_CSV, PlaneFactory, Running, eventually

SLOW = "SELECT count(*) AS n FROM range(100000000000) t(i) WHERE i % 7 = 3"


async def _wait_state(dp: Running, job_id: str, state: str) -> None:
    async def reached() -> bool:
        _, job = await dp.client.request("GET", f"/jobs/{job_id}")
        return bool(job["state"] == state)

    await eventually(reached)


async def test_cancel_interrupts_a_running_query(dp: Running) -> None:
    job = await dp.client.submit("materialize-view", {"nql": SLOW, "dataset_name": "slow"})
    await _wait_state(dp, job["job_id"], "running")
    started = time.monotonic()
    status, cancelling = await dp.client.request("POST", f"/jobs/{job['job_id']}/cancel")
    assert status == 200
    assert cancelling["state"] == "pending_cancellation"
    done = await dp.client.wait(job["job_id"])
    assert done["state"] == "cancelled"
    assert time.monotonic() - started < 5, "the query was interrupted, not run to the end"
    assert done["ended_at"] is not None
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
    loop = asyncio.get_running_loop()
    worst_lag, until = 0.0, loop.time() + 2.0
    while loop.time() < until:
        expected = loop.time() + 0.01
        await asyncio.sleep(0.01)  # ok: the probe itself: how late does the loop wake us?
        worst_lag = max(worst_lag, loop.time() - expected)
        status, _ = await dp.client.request("GET", "/healthz")
        assert status == 200
    _, still = await dp.client.request("GET", f"/jobs/{job['job_id']}")
    assert still["state"] == "running", "the query ran for the whole probe"
    assert worst_lag < 0.05, f"event loop lagged {worst_lag * 1000:.0f} ms"
    await dp.client.request("POST", f"/jobs/{job['job_id']}/cancel")
    assert (await dp.client.wait(job["job_id"]))["state"] == "cancelled"
