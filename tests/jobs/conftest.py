"""Fixtures: a fake jobs API on loopback and a factory of clients with test-sized timings."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from workflowd.domain.jobs import JobRequest
from workflowd.jobs import JobsClient, JobsClientConfig

from .fake_jobs_api import FakeJobsApi

# Small enough that retries, deadlines and backoff play out in well under a second.
FAST = JobsClientConfig(
    base_url="http://127.0.0.1:1",
    request_timeout_s=0.3,
    retry_deadline_s=1.0,
    backoff_initial_s=0.005,
    backoff_max_s=0.05,
    poll_interval_initial_s=0.01,
    poll_interval_max_s=0.05,
    stream_idle_timeout_s=2.0,
)

ClientFactory = Callable[..., Awaitable[JobsClient]]


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until `predicate()` holds, checking on every short tick; fail after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        # A bounded check of state the client exposes no event for (counters, registrations).
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.002)  # ok: tick of a bounded wait


def request(key: str, **changes: Any) -> JobRequest:
    base = JobRequest(
        type="materialize-view",
        input={"nql": "SELECT 1 AS x", "dataset_name": "t1"},
        idempotency_key=key,
        metadata={"workflow_id": "wf-1", "workflow_run_id": "run-1", "task_name": "build"},
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeJobsApi]:
    api = FakeJobsApi()
    await api.start()
    yield api
    await api.close()


@pytest.fixture
async def make_client(fake_api: FakeJobsApi) -> AsyncIterator[ClientFactory]:
    clients: list[JobsClient] = []

    async def make(**overrides: Any) -> JobsClient:
        overrides.setdefault("base_url", f"http://127.0.0.1:{fake_api.port}")
        client = JobsClient(dataclasses.replace(FAST, **overrides))
        await client.start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(make_client: ClientFactory) -> JobsClient:
    return await make_client()
