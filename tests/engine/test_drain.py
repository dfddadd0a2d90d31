"""SIGTERM-style drain (docs/architecture.md, "Drain"): fast, state kept, runs resume on the next start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import Daemon
from tests.engine.support import (
    AUDIT_CSV,
    EVENTS_CSV,
    SLOW_NQL,
    Plane,
    apply,
    finished,
    trigger,
    wait_for_event,
    workflow,
)
from workflowd.api.server import SERVICE_NAME
from workflowd.v1 import workflow_service_pb2 as pb

SLOW_THEN_LOG = workflow(
    "drained",
    f"""\
  - slow:
      call: CreateMaterializedViewIfNotExists
      with: {{nql: "{SLOW_NQL.replace("300000", "20000")}", datasetName: slow_view}}
  - log:
      call: ExecuteDml
      with: {{nql: "INSERT INTO company_data.audit VALUES (7, 7, 'after drain')"}}
""",
)


async def test_drain_is_fast_keeps_state_and_the_run_resumes(
    start_daemon: Callable[..., Awaitable[Daemon]], tmp_path: Path
) -> None:
    data_dir = tmp_path / "state"
    daemon = await start_daemon(data_dir)
    plane = Plane.of(daemon)
    await plane.load_csv("events", EVENTS_CSV)
    await plane.load_csv("audit", AUDIT_CSV)
    await plane.aclose()
    wf = await apply(daemon, SLOW_THEN_LOG)
    run = await trigger(daemon, wf.id)
    submitted = await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED, 0)

    began = time.monotonic()
    await daemon.app.drain()
    took = time.monotonic() - began
    assert took < 2.0, f"drain took {took:.2f} s"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    again = await start_daemon(data_dir)
    stored = (await again.stub.GetRun(pb.GetRunRequest(run_id=run.id))).run
    assert stored.tasks[0].job_id == submitted.job_id
    done = await finished(again, run.id)
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error
    assert done.tasks[0].job_id == submitted.job_id
    plane = Plane.of(again)
    try:
        assert len(await plane.jobs_for_run(run.id)) == 2
        assert [r["note"] for r in await plane.rows("audit")].count("after drain") == 1
    finally:
        await plane.aclose()


async def test_a_draining_daemon_refuses_new_runs(daemon: Daemon) -> None:
    wf = await apply(daemon, SLOW_THEN_LOG)
    assert daemon.app.runs is not None
    daemon.app.runs.refuse_new()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await trigger(daemon, wf.id)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in (info.value.details() or "")


async def test_health_answers_not_serving_while_the_daemon_drains(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    """Health-checking clients learn of the drain while the server is still up: a health Watch
    stream open across the drain gets NOT_SERVING (for the server and for WorkflowService), and
    /healthz answers 503, before the drain is over. The open Watch is an in-flight call, so it
    also holds the server's stop (up to the grace) until the client lets go."""
    grace_s = 30.0
    daemon = await start_daemon(drain_grace_s=grace_s)
    health = health_pb2_grpc.HealthStub(daemon.channel)
    for service in ("", SERVICE_NAME):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    watches = [
        health.Watch(health_pb2.HealthCheckRequest(service=service))
        for service in ("", SERVICE_NAME)
    ]
    updates = [aiter(watch) for watch in watches]
    for update in updates:
        first = await asyncio.wait_for(anext(update), 10)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
    runs_stream = daemon.stub.WatchRuns(pb.WatchRunsRequest())
    await runs_stream.wait_for_connection()
    assert daemon.app.http is not None
    healthz = f"http://127.0.0.1:{daemon.app.http.port}/healthz"
    async with aiohttp.ClientSession() as http:
        async with http.get(healthz) as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": "serving"}

        drain = asyncio.create_task(daemon.app.drain())
        try:
            for update in updates:
                during = await asyncio.wait_for(anext(update), 10)
                assert during.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert not drain.done()
            async with http.get(healthz) as resp:
                assert resp.status == 503
                assert await resp.json() == {"status": "draining"}
            # Streams of runs end (UNAVAILABLE: reconnect later) while the server still runs.
            async with asyncio.timeout(10):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    async for _ in runs_stream:
                        pass
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert not drain.done()
        finally:
            for watch in watches:
                watch.cancel()
            # Let go of the Watch calls and the drain ends at once, well within its grace.
            await asyncio.wait_for(drain, 10)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(healthz):
                pass
