"""Revocation ends streams everywhere: on SIGHUP, a data plane event stream and a gRPC watch
opened with a token the new file removes, or gives to another company, end at once; the
streams of the tokens that stay go on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from tests.api.test_tenancy import ACME, GLOBEX, TOKENS, owned, tokens_file
from tests.conftest import Daemon
from tests.specs import spec
from workflowd.v1 import workflow_service_pb2 as pb

REVOKED = {"tok-globex": TOKENS["tok-globex"]}
MOVED = {"tok-acme": ("globex", "acme-ci"), "tok-globex": TOKENS["tok-globex"]}
SLOW = (
    "  - count:\n"
    "      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: 'SELECT count(*) AS n FROM range(4000000000)', datasetName: counted}\n"
)


@pytest.fixture
async def daemon(start_daemon: Callable[..., Awaitable[Daemon]], tmp_path: Path) -> Daemon:
    return await start_daemon(tokens_file=str(tokens_file(tmp_path / "tokens.toml", TOKENS)))


@asynccontextmanager
async def event_stream(daemon: Daemon, token: str) -> AsyncIterator[aiohttp.StreamReader]:
    """`GET /jobs/events` on the embedded data plane with a company's own token."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{daemon.jobs_url}/jobs/events", headers=headers) as response,
    ):
        assert response.status == 200
        yield response.content


async def read_to_end(content: aiohttp.StreamReader) -> bytes:
    return await asyncio.wait_for(content.read(), timeout=10)


@pytest.mark.parametrize("tokens", [REVOKED, MOVED], ids=["revoked", "moved"])
async def test_a_data_plane_event_stream_ends_with_its_token(
    daemon: Daemon, tmp_path: Path, tokens: dict[str, tuple[str, str]]
) -> None:
    async with (
        event_stream(daemon, "tok-acme") as acme,
        event_stream(daemon, "tok-globex") as globex,
    ):
        tokens_file(tmp_path / "tokens.toml", tokens)
        assert await daemon.app.reload_tokens()  # what SIGHUP does
        await read_to_end(acme)
        assert acme.at_eof()
        # globex's stream goes on, and hears of globex's next job.
        after = await owned(daemon, GLOBEX, "globex-after")
        async with asyncio.timeout(10):
            while after["run"].encode() not in await globex.readline():
                pass


async def read_to_eof(stream: Any) -> None:
    while await stream.read() is not grpc.aio.EOF:
        pass


async def watch_ends_unauthenticated(stream: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(read_to_eof(stream), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return info.value.details() or ""


async def test_a_grpc_watch_ends_when_its_token_moves_to_another_company(
    daemon: Daemon, tmp_path: Path
) -> None:
    created = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=spec(name="slow", tasks=SLOW)), metadata=ACME
    )
    watch_runs = daemon.stub.WatchRuns(pb.WatchRunsRequest(), metadata=ACME)
    others = daemon.stub.WatchRuns(pb.WatchRunsRequest(), metadata=GLOBEX)
    for stream in (watch_runs, others):
        await stream.wait_for_connection()
    run = await daemon.stub.TriggerWorkflow(
        pb.TriggerWorkflowRequest(workflow_id=created.workflow.id), metadata=ACME
    )
    watch_run = daemon.stub.WatchRun(pb.WatchRunRequest(run_id=run.run.id), metadata=ACME)
    # Each stream has sent an event: its handler holds the token it was opened with.
    for stream in (watch_runs, watch_run):
        assert (await asyncio.wait_for(stream.read(), timeout=10)).event.run_id == run.run.id
    tokens_file(tmp_path / "tokens.toml", MOVED)
    assert await daemon.app.reload_tokens()  # what SIGHUP does
    for stream in (watch_runs, watch_run):
        said = await watch_ends_unauthenticated(stream)
        assert said == (
            "the token this stream was opened with was revoked, or now belongs to another company"
        )
    # The token now reaches globex's objects, not acme's; globex's own stream goes on.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.run.id), metadata=ACME)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    still = await owned(daemon, GLOBEX, "globex-still")
    async with asyncio.timeout(10):
        async for response in others:
            if response.event.run_id == still["run"]:
                break
    others.cancel()
