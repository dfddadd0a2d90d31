"""A replaced token: a request refused (401) for carrying the token that was replaced while
it was on its way is retried with the new one, on calls and on the event stream; a 401 to the
token in force is the jobs API's answer, and the caller hears it."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from workflowd.jobs import JobRejected, JobsClient
from workflowd.jobs.credential import Credential

from .conftest import FAST, eventually, request
from .fake_jobs_api import FakeJobsApi


def client_of(fake_api: FakeJobsApi, credential: Credential) -> JobsClient:
    config = dataclasses.replace(FAST, base_url=f"http://127.0.0.1:{fake_api.port}")
    return JobsClient(config, credential=credential)


@pytest.mark.parametrize("path", ["/jobs", "/jobs/events"])
async def test_a_401_to_a_token_replaced_meanwhile_is_retried_with_the_new_one(
    fake_api: FakeJobsApi, path: str
) -> None:
    credential = Credential("old")
    fake_api.token = "old"

    def restarted(arriving: str) -> None:
        # The jobs API restarts with a new token as this request is on its way.
        if arriving == path and fake_api.token == "old":
            fake_api.token = "new"
            credential.replace("new")

    fake_api.on_request = restarted
    async with client_of(fake_api, credential) as client:
        job = await client.submit(request("k"))
        waiting = asyncio.create_task(client.wait(job.job_id))
        await eventually(lambda: fake_api.stream_connects == 1)
        fake_api.complete(job.job_id)  # told by the stream, once it is back
        done = await waiting
    assert done.state.terminal
    paths = [path_qs.split("?")[0] for _, path_qs in fake_api.requests]
    refused = paths.index(path)  # the request met by the restart, refused
    assert fake_api.authorizations[refused] == "Bearer old"
    assert set(fake_api.authorizations[refused + 1 :]) == {"Bearer new"}
    assert path in paths[refused + 1 :], "and sent again with the new token"


async def test_a_401_to_the_token_in_force_is_the_answer(fake_api: FakeJobsApi) -> None:
    fake_api.token = "another"
    async with client_of(fake_api, Credential("mine")) as client:
        with pytest.raises(JobRejected) as info:
            await client.submit(request("k"))
    assert info.value.status == 401
    assert fake_api.authorizations == ["Bearer mine"]
