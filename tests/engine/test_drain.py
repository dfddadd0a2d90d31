"""SIGTERM-style drain (design §7): fast, state kept, runs resume on the next start."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

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
    plane = Plane(daemon.jobs_url)
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
    plane = Plane(again.jobs_url)
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
