"""The jobs client against the real local data plane (`src/dataplane`) over loopback HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dataplane.app import DataPlane
from workflowd.domain.jobs import JobState
from workflowd.jobs import IdempotencyConflict, JobNotFound, JobRejected, JobsClient

from .conftest import FAST, request


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[JobsClient]:
    plane = DataPlane(tmp_path / "data", workers=2, keepalive_s=0.5)
    port = await plane.start("127.0.0.1", 0)
    config = dataclasses.replace(
        FAST, base_url=f"http://127.0.0.1:{port}", retry_deadline_s=5.0, request_timeout_s=5.0
    )
    async with JobsClient(config) as jobs_client:
        yield jobs_client
    await plane.aclose()


async def test_submit_is_idempotent_and_wait_sees_the_result(client: JobsClient) -> None:
    job = await client.submit(request("run-1:0"))
    again = await client.submit(request("run-1:0"))
    assert again.job_id == job.job_id
    done = await client.wait(job.job_id)
    assert done.state is JobState.COMPLETED, done.failure_messages
    assert done.result is not None
    assert done.result["row_count"] == 1 or done.result.get("row_stats") is not None
    with pytest.raises(IdempotencyConflict):
        await client.submit(
            request("run-1:0", input={"nql": "SELECT 2 AS x", "dataset_name": "t1"})
        )


async def test_many_waiters_share_one_stream(client: JobsClient) -> None:
    jobs = [
        await client.submit(
            request(f"run-2:{i}", input={"nql": "SELECT 1 AS x", "dataset_name": f"t{i}"})
        )
        for i in range(20)
    ]
    results = await asyncio.gather(*(client.wait(job.job_id) for job in jobs))
    assert {r.state for r in results} == {JobState.COMPLETED}
    assert client.stats["stream_connects"] == 1
    assert client.stats["polling"] == 0


async def test_a_failing_job_carries_the_data_plane_messages(client: JobsClient) -> None:
    bad = request("run-3:0", input={"nql": "SELECT * FROM company_data.nope", "dataset_name": "t9"})
    done = await client.wait((await client.submit(bad)).job_id)
    assert done.state is JobState.FAILED
    assert done.failure_messages
    assert "nope" in " ".join(done.failure_messages)


async def test_cancel_a_running_job(client: JobsClient) -> None:
    slow = request(
        "run-4:0",
        input={"nql": "SELECT count(*) AS n FROM range(100000000000)", "dataset_name": "slow"},
    )
    job = await client.submit(slow)
    waiter = asyncio.create_task(client.wait(job.job_id))
    cancelled = await client.cancel(job.job_id)
    assert cancelled.state in (JobState.PENDING_CANCELLATION, JobState.CANCELLED)
    assert (await waiter).state is JobState.CANCELLED


async def test_unknown_job_and_bad_request(client: JobsClient) -> None:
    with pytest.raises(JobNotFound):
        await client.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(JobRejected) as caught:
        await client.submit(request("run-5:0", type="no-such-type"))
    assert 400 <= caught.value.status < 500
    assert caught.value.detail
