"""submit/get/get_many/cancel: idempotency, retries through faults, the error mapping."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import socket

import aiohttp
import pytest

from workflowd.domain.jobs import JobState
from workflowd.jobs import (
    IdempotencyConflict,
    JobNotFound,
    JobRejected,
    JobsClient,
    JobsCommunicationError,
)
from workflowd.jobs.watcher import BATCH_SIZE

from .conftest import FAST, ClientFactory, request
from .fake_jobs_api import FakeJobsApi


async def test_same_key_twice_returns_the_same_job_and_sends_the_same_body(
    client: JobsClient, fake_api: FakeJobsApi
) -> None:
    first = await client.submit(request("run-1:0"))
    second = await client.submit(request("run-1:0"))
    assert first.job_id == second.job_id
    assert first.state is JobState.PENDING
    assert len(fake_api.jobs) == 1
    assert fake_api.submitted_bodies[0] == fake_api.submitted_bodies[1]
    sent = json.loads(fake_api.submitted_bodies[0])
    assert sent["tags"] == ["workflow_enqueued"]
    assert sent["metadata"] == {
        "workflow_id": "wf-1",
        "workflow_run_id": "run-1",
        "task_name": "build",
    }
    assert sent["idempotency_key"] == "run-1:0"


async def test_503_burst_is_retried(client: JobsClient, fake_api: FakeJobsApi) -> None:
    fake_api.inject("status", 4, status=503, method="POST")
    job = await client.submit(request("k"))
    assert job.job_id in fake_api.jobs
    assert fake_api.count("POST", "/jobs") == 5
    assert client.stats["api_errors"] == 4


async def test_connection_resets_are_retried(client: JobsClient, fake_api: FakeJobsApi) -> None:
    fake_api.inject("reset", 3, method="POST")
    job = await client.submit(request("k"))
    assert job.job_id in fake_api.jobs
    assert len(fake_api.jobs) == 1


async def test_malformed_2xx_and_429_are_retried(client: JobsClient, fake_api: FakeJobsApi) -> None:
    fake_api.inject("malformed", 2, path_prefix="/jobs/")
    fake_api.inject("status", 1, status=429, path_prefix="/jobs/")
    job = await client.submit(request("k"))
    assert (await client.get(job.job_id)).job_id == job.job_id
    assert fake_api.count("GET", f"/jobs/{job.job_id}") == 4


async def test_a_stalled_request_times_out_and_is_retried(
    client: JobsClient, fake_api: FakeJobsApi
) -> None:
    fake_api.inject("stall", 1, method="POST")
    job = await client.submit(request("k"))
    assert fake_api.count("POST", "/jobs") == 2
    assert job.job_id in fake_api.jobs


async def test_persistent_5xx_fails_with_communication_error_at_the_deadline(
    make_client: ClientFactory, fake_api: FakeJobsApi
) -> None:
    client = await make_client(retry_deadline_s=0.2)
    fake_api.inject("status", 10_000, status=502)
    with pytest.raises(JobsCommunicationError, match=r"unreachable for 0.2 s: HTTP 502"):
        await client.submit(request("k"))
    assert fake_api.count("POST", "/jobs") >= 3  # retried, with backoff in between


async def test_connection_refused_fails_with_communication_error(
    make_client: ClientFactory,
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = await make_client(base_url=f"http://127.0.0.1:{port}", retry_deadline_s=0.1)
    with pytest.raises(JobsCommunicationError, match="connection refused"):
        await client.submit(request("k"))


async def test_4xx_is_rejected_at_once_with_the_api_detail(
    client: JobsClient, fake_api: FakeJobsApi
) -> None:
    with pytest.raises(JobRejected) as caught:
        await client.submit(request("k", type="drop-everything"))
    assert caught.value.status == 422
    assert caught.value.detail == "unknown job type 'drop-everything'"
    assert fake_api.count("POST", "/jobs") == 1


async def test_same_key_with_another_body_is_an_idempotency_conflict(client: JobsClient) -> None:
    await client.submit(request("k"))
    with pytest.raises(IdempotencyConflict, match="another body"):
        await client.submit(request("k", input={"nql": "SELECT 2"}))


async def test_bearer_token_is_sent(make_client: ClientFactory, fake_api: FakeJobsApi) -> None:
    fake_api.token = "s3cret"
    good = await make_client(token="s3cret")
    assert (await good.submit(request("k"))).job_id
    bad = await make_client(token="wrong")
    with pytest.raises(JobRejected, match="401"):
        await bad.submit(request("k"))


async def test_get_and_get_many(client: JobsClient, fake_api: FakeJobsApi) -> None:
    jobs = [await client.submit(request(f"k{i}")) for i in range(3)]
    assert (await client.get(jobs[0].job_id)).job_id == jobs[0].job_id
    with pytest.raises(JobNotFound):
        await client.get("job-unknown")
    ids = [job.job_id for job in jobs] + [f"missing-{i}" for i in range(1100)]
    found = await client.get_many(ids)
    assert sorted(found) == sorted(job.job_id for job in jobs)
    assert fake_api.count("GET", "/jobs") == math.ceil(len(ids) / BATCH_SIZE)


async def test_cancel(client: JobsClient, fake_api: FakeJobsApi) -> None:
    job = await client.submit(request("k"))
    assert (await client.cancel(job.job_id)).state is JobState.CANCELLED
    # Cancelling a job that already ended answers 409: the client returns the job as it is.
    assert (await client.cancel(job.job_id)).state is JobState.CANCELLED
    with pytest.raises(JobNotFound):
        await client.cancel("job-unknown")


async def test_completed_job_parses_result_and_timestamps(
    client: JobsClient, fake_api: FakeJobsApi
) -> None:
    job = await client.submit(request("k"))
    fake_api.complete(job.job_id, {"dataset_id": 7, "row_count": 1})
    info = await client.get(job.job_id)
    assert info.state is JobState.COMPLETED
    assert info.result == {"dataset_id": 7, "row_count": 1}
    assert info.created_at is not None
    assert info.created_at.utcoffset() is not None
    assert info.ended_at is not None


async def test_a_given_session_is_used_and_left_open(fake_api: FakeJobsApi) -> None:
    config = dataclasses.replace(FAST, base_url=f"http://127.0.0.1:{fake_api.port}")
    async with aiohttp.ClientSession(raise_for_status=True) as session:
        async with JobsClient(config, session=session) as client:
            with pytest.raises(JobNotFound):
                await client.get("job-unknown")
            assert (await client.submit(request("k"))).job_id in fake_api.jobs
        assert not session.closed


def test_errors_are_the_domain_classes_the_engine_catches() -> None:
    from workflowd.domain import jobs as domain
    from workflowd.jobs import JobsClientClosed, JobsError

    assert JobRejected is domain.JobRejected
    assert JobNotFound is domain.JobNotFound
    assert IdempotencyConflict is domain.IdempotencyConflict
    assert JobsCommunicationError is domain.JobsCommunicationError
    assert JobsError is domain.JobsError
    assert issubclass(JobsClientClosed, domain.JobsCommunicationError)


async def test_companies_take_turns_for_the_connections(
    make_client: ClientFactory, fake_api: FakeJobsApi
) -> None:
    """One company's burst of submissions delays another's by one turn (issue 16, item 10)."""
    client = await make_client(max_connections=1)
    burst = [
        asyncio.create_task(client.submit(request(f"n{i}"), company="noisy")) for i in range(10)
    ]
    await asyncio.sleep(0)  # ok: yields the loop, no timing; the burst waits for the connection
    other = asyncio.create_task(client.submit(request("q"), company="quiet"))
    await asyncio.gather(*burst, other)
    keys = [json.loads(body)["idempotency_key"] for body in fake_api.submitted_bodies]
    assert keys.index("q") <= 2  # n0 on the connection, n1 first in line, then the other company
    assert [key for key in keys if key != "q"] == [f"n{i}" for i in range(10)]
