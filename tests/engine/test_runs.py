"""Runs end to end: gRPC → engine → jobs client → the local data plane over HTTP → DuckDB."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.conftest import Daemon
from tests.engine.support import (
    SLOW_NQL,
    Plane,
    apply,
    finished,
    jv,
    trigger,
    wait_for_event,
    workflow,
)
from workflowd.v1 import workflow_service_pb2 as pb

PIPELINE = workflow(
    "pipeline",
    """\
  - buildActive:
      call: CreateMaterializedViewIfNotExists
      with:
        nql: SELECT user_id, COUNT(1) AS events FROM company_data.events GROUP BY user_id
        datasetName: active_users
      export: {as: '$context + {activeId: .datasetId, activeRows: .rowStats.rowCount}'}
  - buildTop:
      call: CreateMaterializedViewIfNotExists
      with:
        nql: >-
          CREATE MATERIALIZED VIEW top_users AS
          SELECT user_id FROM company_data.active_users WHERE events >= 2
      export: {as: '$context + {topId: .datasetId}'}
  - refresh:
      call: RefreshMaterializedView
      with: {datasetName: active_users}
      export: {as: '$context + {snapshot: .snapshotId}'}
  - log:
      call: ExecuteDml
      with:
        nql: |-
          ${ "INSERT INTO company_data.audit VALUES (\\($context.activeId), \\($context.activeRows), 'run \\($workflow.runId)')" }
""",
)


async def test_narrative_style_pipeline(daemon: Daemon, plane: Plane) -> None:
    wf = await apply(daemon, PIPELINE)
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)

    assert run.status == pb.RUN_STATUS_COMPLETED, run.error
    assert [t.status for t in run.tasks] == [pb.TASK_STATUS_COMPLETED] * 4
    context = dict(run.context)
    assert context["activeRows"] == 3
    assert {"activeId", "topId", "snapshot"} <= set(context)
    assert run.tasks[3].output.struct_value["rowsAffected"] == 1
    assert run.output.struct_value["statementType"] == "INSERT"

    active = {r["user_id"]: r["events"] for r in await plane.rows("active_users")}
    assert active == {"u1": 2, "u2": 1, "u3": 3}
    assert sorted(r["user_id"] for r in await plane.rows("top_users")) == ["u1", "u3"]
    audit = await plane.rows("audit")
    logged = [r for r in audit if r["note"] == f"run {run.id}"]
    assert len(logged) == 1
    assert logged[0]["dataset_id"] == int(context["activeId"])
    assert logged[0]["row_count"] == 3

    jobs = await plane.jobs_for_run(run.id)
    assert sorted(j["metadata"]["task_name"] for j in jobs) == sorted(t.name for t in run.tasks)
    for job in jobs:
        assert "workflow_enqueued" in job["tags"]
        assert job["metadata"]["workflow_id"] == wf.id
        assert job["metadata"]["workflow_run_id"] == run.id
        assert job["state"] == "completed"
    assert {t.job_id for t in run.tasks} == {j["job_id"] for j in jobs}


async def test_fail_fast_skips_later_tasks_without_jobs(daemon: Daemon, plane: Plane) -> None:
    text = workflow(
        "fails",
        """\
  - first:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT 1 AS one, datasetName: ok_view}
  - broken:
      call: ExecuteDml
      with: {nql: INSERT INTO company_data.no_such_table VALUES (1)}
  - never:
      call: RefreshMaterializedView
      with: {datasetName: ok_view}
""",
    )
    wf = await apply(daemon, text)
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    assert run.status == pb.RUN_STATUS_FAILED
    # `never` never started: it has no instance, and no job.
    assert [t.status for t in run.tasks] == [pb.TASK_STATUS_COMPLETED, pb.TASK_STATUS_FAILED]
    assert [t.name for t in run.tasks] == ["first", "broken"]
    assert run.error.instance == "/do/1/broken"
    assert "broken" in run.error.title
    assert "no_such_table" in run.error.detail
    assert run.error.type.endswith("/errors/runtime")
    assert run.tasks[1].error.detail == run.error.detail
    jobs = await plane.jobs_for_run(run.id)
    assert sorted(j["metadata"]["task_name"] for j in jobs) == ["broken", "first"]


async def test_cancel_mid_job_cancels_the_job(daemon: Daemon, plane: Plane) -> None:
    text = workflow(
        "slow",
        f"""\
  - slow:
      call: CreateMaterializedViewIfNotExists
      with: {{nql: "{SLOW_NQL}", datasetName: slow_view}}
  - after:
      call: RefreshMaterializedView
      with: {{datasetName: slow_view}}
""",
    )
    wf = await apply(daemon, text)
    run = await trigger(daemon, wf.id)
    submitted = await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED, 0)
    cancelled = (await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=run.id))).run
    assert cancelled.status in (pb.RUN_STATUS_CANCELLING, pb.RUN_STATUS_CANCELLED)
    run = await finished(daemon, run.id)
    assert run.status == pb.RUN_STATUS_CANCELLED
    assert [t.status for t in run.tasks] == [pb.TASK_STATUS_CANCELLED]
    job = await plane.job(submitted.job_id)
    assert job["state"] == "cancelled"
    again = (await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=run.id))).run
    assert again.status == pb.RUN_STATUS_CANCELLED


async def test_task_timeout_cancels_the_job_and_fails_the_run(daemon: Daemon, plane: Plane) -> None:
    text = workflow(
        "timeout",
        f"""\
  - slow:
      call: CreateMaterializedViewIfNotExists
      with: {{nql: "{SLOW_NQL}", datasetName: slow_view}}
      timeout: {{after: {{milliseconds: 300}}}}
  - after:
      call: RefreshMaterializedView
      with: {{datasetName: slow_view}}
""",
    )
    wf = await apply(daemon, text)
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    assert run.status == pb.RUN_STATUS_FAILED
    assert run.error.type.endswith("/errors/timeout")
    assert run.error.status == 408
    assert run.error.instance == "/do/0/slow"
    assert [t.status for t in run.tasks] == [pb.TASK_STATUS_FAILED]
    assert (await plane.job(run.tasks[0].job_id))["state"] == "cancelled"


async def test_expression_error_at_run_time_fails_the_task(daemon: Daemon, plane: Plane) -> None:
    text = workflow(
        "badexpr",
        """\
  - first:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT 1 AS one, datasetName: one_view}
  - second:
      call: ExecuteDml
      with:
        nql: '${ "DELETE FROM company_data.one_view WHERE one = \\(.datasetId | error)" }'
""",
    )
    wf = await apply(daemon, text)
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    assert run.status == pb.RUN_STATUS_FAILED
    assert run.error.type.endswith("/errors/expression")
    assert run.error.instance == "/do/1/second"
    assert run.tasks[1].status == pb.TASK_STATUS_FAILED
    assert run.tasks[1].job_id == ""
    assert len(await plane.jobs_for_run(run.id)) == 1


async def test_export_must_yield_an_object(daemon: Daemon, plane: Plane) -> None:
    text = workflow(
        "badexport",
        """\
  - first:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT 1 AS one, datasetName: one_view}
      export: {as: .datasetId}
""",
    )
    wf = await apply(daemon, text)
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    assert run.status == pb.RUN_STATUS_FAILED
    assert "export.as must yield an object" in run.error.title


async def test_trigger_is_idempotent_by_key(daemon: Daemon, plane: Plane) -> None:
    wf = await apply(daemon, PIPELINE)
    first = await trigger(daemon, wf.id, idempotency_key="nightly-2026-11-24")
    again = await trigger(daemon, wf.id, idempotency_key="nightly-2026-11-24")
    assert again.id == first.id
    other = await trigger(daemon, wf.id, idempotency_key="nightly-2026-11-25")
    assert other.id != first.id
    await finished(daemon, first.id)
    await finished(daemon, other.id)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.TriggerWorkflow(
            pb.TriggerWorkflowRequest(
                workflow_id=wf.id, idempotency_key="nightly-2026-11-24", input=jv({"x": 1})
            )
        )
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_input_schema_refuses_a_bad_input_before_any_run(daemon: Daemon) -> None:
    text = workflow(
        "schema",
        """\
  - first:
      call: CreateMaterializedViewIfNotExists
      with: {nql: '${ "SELECT \\(.limit) AS n" }', datasetName: n_view}
""",
        extra="input:\n  schema:\n    format: json\n    document:\n      type: object\n"
        "      required: [limit]\n      properties: {limit: {type: integer}}\n",
    )
    wf = await apply(daemon, text)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.TriggerWorkflow(
            pb.TriggerWorkflowRequest(workflow_id=wf.id, input=jv({"limit": "ten"}))
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input/limit" in (info.value.details() or "")
    runs = await daemon.stub.ListRuns(pb.ListRunsRequest(workflow_id=wf.id))
    assert list(runs.runs) == []
    ok = await trigger(daemon, wf.id, input=jv({"limit": 10}))
    done = await finished(daemon, ok.id)
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error


async def test_list_runs_filters_and_pages(daemon: Daemon, plane: Plane) -> None:
    wf = await apply(daemon, PIPELINE)
    ids = [(await trigger(daemon, wf.id)).id for _ in range(5)]
    await asyncio.gather(*(finished(daemon, i) for i in ids))
    page1 = await daemon.stub.ListRuns(pb.ListRunsRequest(workflow_id=wf.id, page_size=3))
    page2 = await daemon.stub.ListRuns(
        pb.ListRunsRequest(workflow_id=wf.id, page_size=3, page_token=page1.next_page_token)
    )
    assert [r.id for r in [*page1.runs, *page2.runs]] == list(reversed(ids))
    assert page2.next_page_token == ""
    failed = await daemon.stub.ListRuns(
        pb.ListRunsRequest(workflow_id=wf.id, statuses=[pb.RUN_STATUS_FAILED])
    )
    completed = await daemon.stub.ListRuns(
        pb.ListRunsRequest(workflow_id=wf.id, statuses=[pb.RUN_STATUS_COMPLETED])
    )
    assert len(failed.runs) + len(completed.runs) == 5
