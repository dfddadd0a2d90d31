"""Re-runs through the real daemon and data plane: a re-run from the failure reuses what
completed before it (no job submitted again, counted in the data plane) and runs the rest, in a
straight line, in a loop and in a `try`; from a task; from the start; a backfill that re-runs
the failed instants."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from google.protobuf import json_format

from tests.conftest import Daemon
from tests.engine.support import Plane, apply, finished, trigger, workflow
from workflowd.v1 import workflow_service_pb2 as pb

PIPELINE = workflow(
    "nightly",
    """\
  - build:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT user_id FROM company_data.events, datasetName: users}
      export: {as: '{usersId: .datasetId}'}
  - count:
      call: CreateMaterializedViewIfNotExists
      with:
        nql: '${ "SELECT COUNT(1) AS n, \\($context.usersId) AS source FROM company_data.late" }'
        datasetName: counted
  - refresh:
      call: RefreshMaterializedView
      with: {datasetName: counted}
""",
)


async def rerun(daemon: Daemon, run_id: str, start: str = "") -> pb.Run:
    reply = await daemon.stub.RerunRun(pb.RerunRunRequest(run_id=run_id, start=start))
    return await finished(daemon, reply.run.id)


async def job_names(plane: Plane, run_id: str) -> list[str]:
    return sorted(j["metadata"]["task_name"] for j in await plane.jobs_for_run(run_id))


async def test_a_rerun_from_the_failure_reuses_what_completed(daemon: Daemon, plane: Plane) -> None:
    failed = await finished(daemon, (await trigger(daemon, (await apply(daemon, PIPELINE)).id)).id)
    assert failed.status == pb.RUN_STATUS_FAILED
    assert failed.error.instance == "/do/1/count"
    await plane.load_csv("late", "x\n1\n")  # what was missing is there now

    again = await rerun(daemon, failed.id)
    assert again.status == pb.RUN_STATUS_COMPLETED, again.error
    assert again.rerun_of == failed.id
    assert again.trigger == pb.RUN_TRIGGER_RERUN
    assert [(t.name, t.reused) for t in again.tasks] == [
        ("build", True),
        ("count", False),
        ("refresh", False),
    ]
    assert again.tasks[0].job_id == failed.tasks[0].job_id  # the job that made it, not a new one
    assert again.context == failed.context  # its export, replayed
    assert await job_names(plane, again.id) == ["count", "refresh"]  # no second `build` job
    rows = await plane.rows("counted")
    assert rows[0]["source"] == json_format.MessageToDict(failed.context)["usersId"]


async def test_a_rerun_inside_a_loop_and_a_try(daemon: Daemon, plane: Plane) -> None:
    text = workflow(
        "loopy",
        """\
  - each:
      for: {in: '["events", "audit", "late"]'}
      do:
        - guarded:
            try:
              - count:
                  call: CreateMaterializedViewIfNotExists
                  with:
                    nql: '${ "SELECT COUNT(1) AS n FROM company_data.\\($item)" }'
                    datasetName: '${ "n_" + $item }'
            catch:
              retry: {delay: {milliseconds: 50}, limit: {attempt: {count: 1}}}
""",
    )
    failed = await finished(daemon, (await trigger(daemon, (await apply(daemon, text)).id)).id)
    assert failed.status == pb.RUN_STATUS_FAILED
    assert sorted(
        j["idempotency_key"].split(":", 1)[1] for j in await plane.jobs_for_run(failed.id)
    ) == [
        "/do/0/each/do/0/guarded/try/0/count@i0",
        "/do/0/each/do/0/guarded/try/0/count@i1",
        "/do/0/each/do/0/guarded/try/0/count@i2",
        "/do/0/each/do/0/guarded/try/0/count@i2.a2",
    ]
    await plane.load_csv("late", "x\n1\n")
    again = await rerun(daemon, failed.id)
    assert again.status == pb.RUN_STATUS_COMPLETED, again.error
    keys = sorted(j["idempotency_key"].split(":", 1)[1] for j in await plane.jobs_for_run(again.id))
    assert keys == ["/do/0/each/do/0/guarded/try/0/count@i2.a2"]  # only the failed attempt
    reused = {t.key for t in again.tasks if t.reused}
    assert reused == {
        "/do/0/each/do/0/guarded/try/0/count@i0",
        "/do/0/each/do/0/guarded/try/0/count@i1",
        "/do/0/each/do/0/guarded/try/0/count@i2",
    }


async def test_a_rerun_from_a_task_and_from_the_start(daemon: Daemon, plane: Plane) -> None:
    await plane.load_csv("late", "x\n1\n")
    done = await finished(daemon, (await trigger(daemon, (await apply(daemon, PIPELINE)).id)).id)
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await daemon.stub.RerunRun(pb.RerunRunRequest(run_id=done.id))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "completed" in str(refused.value.details())

    from_refresh = await rerun(daemon, done.id, "/do/2/refresh")
    assert [t.reused for t in from_refresh.tasks] == [True, True, False]
    assert await job_names(plane, from_refresh.id) == ["refresh"]
    from_start = await rerun(daemon, done.id, "start")
    assert not any(t.reused for t in from_start.tasks)
    assert await job_names(plane, from_start.id) == ["build", "count", "refresh"]
    with pytest.raises(grpc.aio.AioRpcError) as nowhere:
        await daemon.stub.RerunRun(pb.RerunRunRequest(run_id=done.id, start="/do/9/nothing"))
    assert nowhere.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_backfill_reruns_the_failed_instants(daemon: Daemon, plane: Plane) -> None:
    text = workflow(
        "hourly",
        """\
  - count:
      call: CreateMaterializedViewIfNotExists
      with:
        nql: '${ "SELECT COUNT(1) AS n FROM company_data.late WHERE \\"hour\\" = ''\\($workflow.scheduledAt)''" }'
        datasetName: '${ "n_" + ($workflow.scheduledAt | gsub("[^0-9]"; "")) }'
""",
        extra="schedule: {cron: '0 * * * *'}\n",
    )
    wf = await apply(daemon, text)
    await daemon.stub.ScheduleWorkflow(pb.ScheduleWorkflowRequest(workflow_id=wf.id))
    now = daemon.app.clock.now().replace(minute=0, second=0, microsecond=0)
    request = pb.BackfillWorkflowRequest(workflow_id=wf.id, parallel=True)
    request.start_time.FromDatetime(now - timedelta(hours=2))
    request.end_time.FromDatetime(now)
    first = await daemon.stub.BackfillWorkflow(request)
    runs = [await finished(daemon, run_id) for run_id in first.run_ids]
    assert [r.status for r in runs] == [pb.RUN_STATUS_FAILED] * 2  # `late` does not exist yet

    again = await daemon.stub.BackfillWorkflow(request)
    assert (list(again.run_ids), again.created) == (list(first.run_ids), 0)  # idempotent

    await plane.load_csv("late", "hour\nx\n")
    request.rerun = pb.RERUN_POLICY_FAILED
    rerun_reply = await daemon.stub.BackfillWorkflow(request)
    assert rerun_reply.created == 2
    reruns = [await finished(daemon, run_id) for run_id in rerun_reply.run_ids]
    assert [r.status for r in reruns] == [pb.RUN_STATUS_COMPLETED] * 2
    assert [r.rerun_of for r in reruns] == list(first.run_ids)
    assert [r.scheduled_at for r in reruns] == [r.scheduled_at for r in runs]
    schedule = await daemon.stub.GetSchedule(pb.GetScheduleRequest(workflow_id=wf.id))
    decisions = {d.run_id: d for d in schedule.schedule.recent_decisions}
    for run in reruns:
        assert decisions[run.id].outcome == pb.FIRE_OUTCOME_RERUN
        assert run.rerun_of in decisions[run.id].reason
    quiet = await daemon.stub.BackfillWorkflow(request)  # nothing failed any more
    assert quiet.created == 0
