"""The workflow-level timeout (`timeout: {after: PT2S}` on the document) against a real slow
query on the local data plane: the run ends FAILED with a timeout problem, the job in flight is
cancelled in the data plane, and no later task's job is ever submitted."""

from __future__ import annotations

from typing import Any

from tests.conftest import Daemon, eventually
from tests.engine.support import SLOW_NQL, Plane, apply, finished, trigger, workflow
from workflowd.v1 import workflow_service_pb2 as pb

TIMEOUT_S = 2.0
# Stays well under a minute (pytest's timeout is 120 s), so a run that merely waited for its
# job to finish instead of timing out fails here on time, not on pytest's timer.
ENDS_WITHIN_S = 30.0

SLOW = f"""\
  - slow:
      call: CreateMaterializedViewIfNotExists
      with: {{nql: "{SLOW_NQL}", datasetName: slow_view}}
"""
AFTER = """\
  - after:
      call: RefreshMaterializedView
      with: {datasetName: slow_view}
  - log:
      call: ExecuteDml
      with: {nql: "INSERT INTO company_data.audit VALUES (9, 9, 'too late')"}
"""
QUICK = """\
  - quick:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT 1 AS one, datasetName: quick_view}
"""
WORKFLOW_TIMEOUT = "timeout: {after: PT2S}\n"


async def assert_timed_out_on(daemon: Daemon, plane: Plane, run: pb.Run, slow_index: int) -> None:
    """The run failed on the workflow timeout while task `slow_index` waited on its job."""
    assert run.status == pb.RUN_STATUS_FAILED, run.error
    assert run.error.type.endswith("/errors/timeout"), run.error
    assert run.error.status == 408
    took = run.ended_at.ToDatetime() - run.started_at.ToDatetime()
    assert TIMEOUT_S <= took.total_seconds() < ENDS_WITHIN_S, took

    statuses = [t.status for t in run.tasks]
    assert statuses[:slow_index] == [pb.TASK_STATUS_COMPLETED] * slow_index
    assert statuses[slow_index] == pb.TASK_STATUS_FAILED
    assert statuses[slow_index + 1 :] == [pb.TASK_STATUS_SKIPPED] * (len(statuses) - slow_index - 1)
    slow_job = run.tasks[slow_index].job_id
    assert slow_job
    assert all(not t.job_id for t in run.tasks[slow_index + 1 :])

    async def cancelled() -> dict[str, Any]:
        job = await plane.job(slow_job)
        assert job["state"] == "cancelled", job
        return job

    await eventually(cancelled)
    jobs = await plane.jobs_for_run(run.id)
    assert sorted(j["job_id"] for j in jobs) == sorted(
        t.job_id for t in run.tasks[: slow_index + 1]
    )
    assert "too late" not in [row["note"] for row in await plane.rows("audit")]


async def test_the_workflow_timeout_cancels_the_slow_job_and_fails_the_run(
    daemon: Daemon, plane: Plane
) -> None:
    wf = await apply(daemon, workflow("wf-timeout", SLOW + AFTER, extra=WORKFLOW_TIMEOUT))
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    await assert_timed_out_on(daemon, plane, run, slow_index=0)


async def test_the_workflow_timeout_stops_a_later_task_after_earlier_ones_completed(
    daemon: Daemon, plane: Plane
) -> None:
    wf = await apply(
        daemon, workflow("wf-timeout-later", QUICK + SLOW + AFTER, extra=WORKFLOW_TIMEOUT)
    )
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    await assert_timed_out_on(daemon, plane, run, slow_index=1)
