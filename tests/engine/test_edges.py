"""Edges: cancels that outlive a process, bad values that must not become INTERNAL."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from dataplane.app import DataPlane
from tests.conftest import Daemon
from tests.engine.support import (
    SLOW_NQL,
    Plane,
    apply,
    events_until_end,
    finished,
    trigger,
    wait_for_event,
    workflow,
)
from workflowd.v1 import workflow_service_pb2 as pb

SLOW = workflow(
    "slow-edge",
    f"""\
  - slow:
      call: CreateMaterializedViewIfNotExists
      with: {{nql: "{SLOW_NQL}", datasetName: slow_view}}
  - after:
      call: RefreshMaterializedView
      with: {{datasetName: slow_view}}
""",
)
TRIVIAL = workflow(
    "trivial-edge",
    "  - one:\n      call: CreateMaterializedViewIfNotExists\n      with: {nql: SELECT 1 AS one, datasetName: one_view}\n",
)

PENDING_ID = "0b0c0d0e-0000-4000-8000-00000000abcd"


@pytest.fixture
async def remote_plane(tmp_path: Path) -> AsyncIterator[Plane]:
    """A data plane outside the daemon, so it outlives the daemon's restarts."""
    plane = DataPlane(tmp_path / "plane")
    port = await plane.start("127.0.0.1", 0)
    client = Plane(f"http://127.0.0.1:{port}")
    yield client
    await client.aclose()
    await plane.aclose()


async def test_a_cancel_stored_before_a_restart_stops_the_running_job(
    start_daemon: Callable[..., Awaitable[Daemon]], remote_plane: Plane, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    daemon = await start_daemon(state, jobs_url=remote_plane.base_url)
    wf = await apply(daemon, SLOW)
    run = await trigger(daemon, wf.id)
    submitted = await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED, 0)
    await daemon.app.drain()
    # As if CancelRun had committed just before the process died.
    with sqlite3.connect(state / "workflowd.db") as conn:
        conn.execute("UPDATE runs SET status = 'cancelling' WHERE id = ?", (run.id,))

    again = await start_daemon(state, jobs_url=remote_plane.base_url)
    done = await finished(again, run.id)
    assert done.status == pb.RUN_STATUS_CANCELLED
    assert [t.status for t in done.tasks] == [pb.TASK_STATUS_CANCELLED]
    assert (await remote_plane.job(submitted.job_id))["state"] == "cancelled"
    assert len(await remote_plane.jobs_for_run(run.id)) == 1


async def test_a_run_cancelled_before_it_started_ends_cancelled(
    start_daemon: Callable[..., Awaitable[Daemon]], remote_plane: Plane, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    daemon = await start_daemon(state, jobs_url=remote_plane.base_url)
    wf = await apply(daemon, TRIVIAL)
    assert daemon.app.runs is not None
    daemon.app.runs.refuse_new()  # draining: the run is stored but not started
    with pytest.raises(grpc.aio.AioRpcError):
        await trigger(daemon, wf.id)
    await daemon.app.drain()
    with sqlite3.connect(state / "workflowd.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0

    daemon = await start_daemon(state, jobs_url=remote_plane.base_url)
    run = await trigger(daemon, wf.id)
    await finished(daemon, run.id)
    await daemon.app.drain()
    with sqlite3.connect(state / "workflowd.db") as conn:
        conn.execute(
            "INSERT INTO runs (id, company, workflow_id, namespace, name, version, status,"
            " trigger, input, created_at) SELECT '0b0c0d0e-0000-4000-8000-00000000abcd', company, workflow_id, namespace,"
            " name, version, 'cancelling', trigger, input, created_at FROM runs WHERE id = ?",
            (run.id,),
        )
    again = await start_daemon(state, jobs_url=remote_plane.base_url)
    done = await finished(again, PENDING_ID)
    assert done.status == pb.RUN_STATUS_CANCELLED
    assert list(done.tasks) == []
    assert await remote_plane.jobs_for_run(PENDING_ID) == []


async def test_non_json_numbers_and_bad_timestamps_are_invalid_argument(daemon: Daemon) -> None:
    wf = await apply(daemon, TRIVIAL)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.TriggerWorkflow(
            pb.TriggerWorkflowRequest(
                workflow_id=wf.id, input=struct_pb2.Value(number_value=float("nan"))
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.ListRuns(
            pb.ListRunsRequest(created_after=timestamp_pb2.Timestamp(seconds=-(10**13)))
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "created_after" in (info.value.details() or "")


async def test_an_unresolvable_schema_ref_is_refused_at_creation(daemon: Daemon) -> None:
    text = workflow(
        "badref",
        "  - one:\n      call: CreateMaterializedViewIfNotExists\n      with: {nql: SELECT 1 AS one, datasetName: one_view}\n",
        extra="input:\n  schema:\n    format: json\n    document: {$ref: '#/$defs/missing'}\n",
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await apply(daemon, text)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "/input/schema/document/$ref" in (info.value.details() or "")


async def test_watching_after_a_seq_that_does_not_exist_is_invalid(
    daemon: Daemon, remote_plane: Plane
) -> None:
    wf = await apply(daemon, TRIVIAL)
    events = await events_until_end(daemon, (await trigger(daemon, wf.id)).id)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in daemon.stub.WatchRun(
            pb.WatchRunRequest(run_id=events[0].run_id, after_seq=events[-1].seq + 5)
        ):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
