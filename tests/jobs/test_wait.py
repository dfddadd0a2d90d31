"""wait(): one shared stream for every waiter, resumption, reset, polling, and lifecycles."""

from __future__ import annotations

import asyncio
import math

import pytest

from workflowd.domain.jobs import JobInfo, JobState
from workflowd.jobs import (
    JobNotFound,
    JobRejected,
    JobsClient,
    JobsClientClosed,
    JobsCommunicationError,
)
from workflowd.jobs.watcher import BATCH_SIZE

from .conftest import FAST, ClientFactory, eventually, request
from .fake_jobs_api import FakeJobsApi


async def _submit_many(client: JobsClient, count: int) -> list[str]:
    jobs = await asyncio.gather(*(client.submit(request(f"run:{i}")) for i in range(count)))
    return [job.job_id for job in jobs]


def _waiters(client: JobsClient, job_ids: list[str]) -> list[asyncio.Task[JobInfo]]:
    return [asyncio.create_task(client.wait(job_id)) for job_id in job_ids]


async def _settled(client: JobsClient, fake_api: FakeJobsApi, awaited: int) -> None:
    """Waiters registered, stream connected, and their first reconciliation done."""
    await fake_api.stream_connected.wait()
    await eventually(lambda: client.stats["awaited"] == awaited)
    await eventually(lambda: client.stats["stream_connects"] == 1)
    reads = fake_api.count("GET", "/jobs")
    await eventually(lambda: reads >= 1 and fake_api.count("GET", "/jobs") == reads)


async def test_200_waiters_share_one_stream_connection(
    client: JobsClient, fake_api: FakeJobsApi
) -> None:
    job_ids = await _submit_many(client, 200)
    waiters = _waiters(client, job_ids)
    await _settled(client, fake_api, 200)
    for job_id in job_ids[:150]:
        fake_api.complete(job_id, {"n": job_id})
    for job_id in job_ids[150:]:
        fake_api.fail(job_id, "boom")
    results = await asyncio.gather(*waiters)
    assert [r.job_id for r in results] == job_ids
    assert {r.state for r in results[:150]} == {JobState.COMPLETED}
    assert results[0].result == {"n": job_ids[0]}
    assert results[199].failure_messages == ("boom",)
    assert fake_api.stream_connects == 1
    assert client.stats["stream_connects"] == 1
    assert fake_api.path_counts()["/jobs/events"] == 1
    # Batched reconciliation (a few rounds of ≤ BATCH_SIZE ids), never one request per job.
    assert fake_api.count("GET", "/jobs") <= 3 * math.ceil(200 / BATCH_SIZE)
    assert not any(path.startswith("/jobs/job-") for _, path in fake_api.requests)
    assert client.stats["awaited"] == 0


async def test_a_job_that_ended_before_anyone_listened(
    client: JobsClient, fake_api: FakeJobsApi
) -> None:
    fake_api.auto_complete = fake_api.answer_pending = True
    job = await client.submit(request("k"))
    assert job.state is JobState.PENDING  # ended meanwhile, before the stream was opened
    assert (await client.wait(job.job_id)).state is JobState.COMPLETED
    assert fake_api.count("GET", "/jobs") == 1  # so it was read
    fake_api.answer_pending = False
    other = await client.submit(request("k2"))
    assert other.state is JobState.COMPLETED
    # The answer said it all: neither a read nor the stream is needed.
    assert (await client.wait(other.job_id)).state is JobState.COMPLETED
    assert fake_api.count("GET", "/jobs") == 1


async def test_a_job_sent_while_the_stream_is_live_is_never_read(
    client: JobsClient, fake_api: FakeJobsApi
) -> None:
    # Each POST is answered "pending" while the job's completion is already on the stream, so
    # its end reaches the client before or after its waiter registers, in either order.
    fake_api.auto_complete = fake_api.answer_pending = True
    first = await client.submit(request("first"))
    assert (await client.wait(first.job_id)).state is JobState.COMPLETED
    await eventually(lambda: client.stats["stream_connects"] == 1)
    reads = fake_api.count("GET", "/jobs")  # the first job was sent before the stream was live
    for i in range(100):
        job = await client.submit(request(f"k{i}"))
        assert job.state is JobState.PENDING
        assert (await client.wait(job.job_id)).state is JobState.COMPLETED
    concurrent = await _submit_many(client, 50)
    results = await asyncio.gather(*_waiters(client, concurrent))
    assert {r.state for r in results} == {JobState.COMPLETED}
    assert fake_api.count("GET", "/jobs") == reads
    assert not any(path.startswith("/jobs/job-") for _, path in fake_api.requests)
    assert client.stats["awaited"] == 0


async def test_a_job_that_ended_before_the_stream_is_known_from_its_post_answer(
    make_client: ClientFactory, fake_api: FakeJobsApi
) -> None:
    before = await make_client()
    ended = await before.submit(request("resubmitted"))
    fake_api.complete(ended.job_id)  # no one of this client listens: it ended unseen
    after = await make_client()
    other = await after.submit(request("other"))
    waiter = asyncio.create_task(after.wait(other.job_id))
    await eventually(lambda: after.stats["stream_connects"] == 1)
    reads = fake_api.count("GET", "/jobs")
    # A restarted daemon sends its stored request again: the answer is the ended job.
    again = await after.submit(request("resubmitted"))
    assert again.job_id == ended.job_id
    assert again.state is JobState.COMPLETED
    assert (await after.wait(again.job_id)).state is JobState.COMPLETED
    assert fake_api.count("GET", "/jobs") == reads
    fake_api.complete(other.job_id)
    assert (await waiter).state is JobState.COMPLETED


async def test_an_end_lost_while_the_stream_reconnects_is_read(
    client: JobsClient, fake_api: FakeJobsApi
) -> None:
    first = await client.submit(request("first"))
    waiter = asyncio.create_task(client.wait(first.job_id))
    await _settled(client, fake_api, 1)
    fake_api.complete(first.job_id)  # so that the client holds an event id to resume from
    await waiter
    sent = await client.submit(request("sent-live"))  # sent while the stream is live
    fake_api.drop_streams()
    fake_api.complete(sent.job_id)  # its end falls in the gap...
    fake_api.forget_events()  # ...which the reconnect cannot replay: it is told `reset`
    await eventually(lambda: client.stats["stream_resets"] == 1)
    reads = fake_api.count("GET", "/jobs")
    # The default safety net re-reads after 60 s: this ends long before, by a read.
    async with asyncio.timeout(10):
        assert (await client.wait(sent.job_id)).state is JobState.COMPLETED
    assert fake_api.count("GET", "/jobs") == reads + 1


async def test_dropped_stream_resumes_with_last_event_id_and_loses_no_waiter(
    client: JobsClient, fake_api: FakeJobsApi
) -> None:
    job_ids = await _submit_many(client, 50)
    waiters = _waiters(client, job_ids)
    await _settled(client, fake_api, 50)
    for job_id in job_ids[:10]:
        fake_api.complete(job_id)
    await eventually(lambda: client.stats["awaited"] == 40)
    reads_before = fake_api.count("GET", "/jobs")
    fake_api.drop_streams()
    for job_id in job_ids[10:]:  # ends while no stream is connected
        fake_api.complete(job_id)
    results = await asyncio.gather(*waiters)
    assert all(r.state is JobState.COMPLETED for r in results)
    assert fake_api.stream_connects == 2
    assert fake_api.last_event_ids[0] is None
    assert fake_api.last_event_ids[1] is not None
    assert int(fake_api.last_event_ids[1]) >= 60  # 50 creations + 10 completions seen
    assert fake_api.count("GET", "/jobs") == reads_before  # the resume left no gap to read


async def test_reset_event_makes_the_client_reread_every_awaited_job(
    client: JobsClient, fake_api: FakeJobsApi
) -> None:
    job_ids = await _submit_many(client, 20)
    waiters = _waiters(client, job_ids)
    await _settled(client, fake_api, 20)
    fake_api.complete(job_ids[0])  # so that the client holds an event id to resume from
    await waiters[0]
    reads_before = fake_api.count("GET", "/jobs")
    fake_api.drop_streams()
    for job_id in job_ids[1:]:
        fake_api.complete(job_id)
    fake_api.forget_events()  # the client's Last-Event-ID is now too old
    results = await asyncio.gather(*waiters)
    assert all(r.state is JobState.COMPLETED for r in results)
    assert fake_api.last_event_ids[1] is not None
    assert client.stats["stream_resets"] == 1
    assert fake_api.count("GET", "/jobs") == reads_before + 1


async def test_vanished_job_fails_its_waiter_with_job_not_found(
    client: JobsClient, fake_api: FakeJobsApi
) -> None:
    gone, kept = await _submit_many(client, 2)
    waiters = _waiters(client, [gone, kept])
    await _settled(client, fake_api, 2)
    fake_api.vanish(gone)  # silently: no event tells of it
    fake_api.drop_streams()
    fake_api.complete(kept)  # an event the client misses...
    fake_api.forget_events()  # ...and cannot resume to: it must re-read what it awaits
    with pytest.raises(JobNotFound):
        await waiters[0]
    assert (await waiters[1]).state is JobState.COMPLETED


async def test_without_a_stream_awaited_jobs_are_polled_in_batches(
    client: JobsClient, fake_api: FakeJobsApi
) -> None:
    fake_api.no_stream = True
    job_ids = await _submit_many(client, 200)
    waiters = _waiters(client, job_ids)
    await eventually(lambda: client.stats["polling"] == 1 and client.stats["awaited"] == 200)
    rounds = client.stats["poll_rounds"]
    await eventually(lambda: client.stats["poll_rounds"] >= rounds + 2)
    for job_id in job_ids:
        fake_api.complete(job_id)
    results = await asyncio.gather(*waiters)
    assert all(r.state is JobState.COMPLETED for r in results)
    assert fake_api.path_counts()["/jobs/events"] == 1  # asked once, then polled
    assert not any(path.startswith("/jobs/job-") for _, path in fake_api.requests)
    # Each read covers every awaited job: as many requests as rounds, not as jobs.
    assert fake_api.count("GET", "/jobs") <= client.stats["reconcile_requests"]
    print("STATS", client.stats, fake_api.count("GET", "/jobs"))
    # A read of all 200 takes two batches, whether a round's or the first reads of waiters
    # that registered over a couple of the loop's turns.
    batches = math.ceil(200 / BATCH_SIZE)
    assert client.stats["reconcile_requests"] <= batches * (client.stats["poll_rounds"] + 2)


async def test_polling_notices_a_vanished_job(client: JobsClient, fake_api: FakeJobsApi) -> None:
    fake_api.no_stream = True
    (job_id,) = await _submit_many(client, 1)
    waiter = asyncio.create_task(client.wait(job_id))
    await eventually(lambda: client.stats["polling"] == 1)
    fake_api.vanish(job_id)
    with pytest.raises(JobNotFound):
        await waiter


async def test_cancelling_a_waiter_removes_its_registration(
    client: JobsClient, fake_api: FakeJobsApi
) -> None:
    (job_id,) = await _submit_many(client, 1)
    first, second = _waiters(client, [job_id, job_id])
    await _settled(client, fake_api, 1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert client.stats["awaited"] == 1  # the other waiter of the same job stays
    fake_api.complete(job_id)
    assert (await second).state is JobState.COMPLETED
    pending = await client.submit(request("another"))
    lone = asyncio.create_task(client.wait(pending.job_id))
    await eventually(lambda: client.stats["awaited"] == 1)
    lone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lone
    assert client.stats["awaited"] == 0


async def test_unreachable_api_fails_waiters_after_the_deadline(
    make_client: ClientFactory, fake_api: FakeJobsApi
) -> None:
    client = await make_client(retry_deadline_s=0.3)
    (job_id,) = await _submit_many(client, 1)
    waiter = asyncio.create_task(client.wait(job_id))
    await _settled(client, fake_api, 1)
    await fake_api.close()  # the stream ends and every reconnect is refused
    with pytest.raises(JobsCommunicationError, match=r"unreachable for 0\.3 s"):
        await waiter


async def test_wrong_token_fails_waiters_with_the_api_detail(
    make_client: ClientFactory, fake_api: FakeJobsApi
) -> None:
    owner = await make_client()
    (job_id,) = await _submit_many(owner, 1)
    fake_api.token = "s3cret"
    intruder = await make_client(token="wrong")
    with pytest.raises(JobRejected, match="wrong bearer token"):
        await intruder.wait(job_id)


async def test_silent_stream_is_reconnected_after_the_idle_timeout(
    make_client: ClientFactory, fake_api: FakeJobsApi
) -> None:
    client = await make_client(stream_idle_timeout_s=0.1)
    (job_id,) = await _submit_many(client, 1)
    waiter = asyncio.create_task(client.wait(job_id))
    await eventually(lambda: fake_api.stream_connects >= 2)
    fake_api.complete(job_id)
    assert (await waiter).state is JobState.COMPLETED


async def test_aclose_is_idempotent_and_fails_pending_waiters(
    make_client: ClientFactory, fake_api: FakeJobsApi
) -> None:
    client = await make_client()
    (job_id,) = await _submit_many(client, 1)
    waiter = asyncio.create_task(client.wait(job_id))
    await _settled(client, fake_api, 1)
    await client.aclose()
    await client.aclose()
    with pytest.raises(JobsClientClosed):
        await waiter
    with pytest.raises(JobsClientClosed):
        await client.get(job_id)
    assert client.stats["watching"] == 0


async def test_start_twice_and_use_before_start_are_refused(fake_api: FakeJobsApi) -> None:
    client = JobsClient(FAST)
    with pytest.raises(RuntimeError, match="before start"):
        await client.get("job-1")
    await client.start()
    try:
        with pytest.raises(RuntimeError, match="twice"):
            await client.start()
    finally:
        await client.aclose()


async def test_a_broken_stream_endpoint_degrades_to_reading_awaited_jobs(
    client: JobsClient, fake_api: FakeJobsApi
) -> None:
    fake_api.inject("status", 10_000, status=503, path_prefix="/jobs/events")
    job_ids = await _submit_many(client, 3)
    waiters = _waiters(client, job_ids)
    await eventually(lambda: fake_api.count("GET", "/jobs/events") >= 3)
    for job_id in job_ids:
        fake_api.complete(job_id)
    results = await asyncio.gather(*waiters)
    assert all(r.state is JobState.COMPLETED for r in results)
    assert client.stats["stream_connects"] == 0


async def test_transport_faults_are_logged_with_the_job_id(
    client: JobsClient, fake_api: FakeJobsApi, caplog: pytest.LogCaptureFixture
) -> None:
    (job_id,) = await _submit_many(client, 1)
    fake_api.inject("status", 1, status=503, path_prefix="/jobs/job-")
    with caplog.at_level("WARNING", logger="workflowd.jobs"):
        await client.get(job_id)
    (record,) = [r for r in caplog.records if r.name == "workflowd.jobs"]
    assert record.levelname == "WARNING"
    assert record.job_id == job_id  # type: ignore[attr-defined]
    assert "HTTP 503" in record.getMessage()
