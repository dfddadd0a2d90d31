"""kill -9 at each dangerous point: the daemon (a real subprocess) restarts, every run completes,
and the data plane (another subprocess, never killed here) holds exactly one job per task."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import grpc
import pytest

from tests.engine.crash_support import Stack, run_to_end
from tests.engine.support import SLOW_NQL, workflow
from tests.procs import ExitedBeforeReady
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

PIPELINE = workflow(
    "crashy",
    """\
  - build:
      call: CreateMaterializedViewIfNotExists
      with:
        nql: SELECT user_id, COUNT(1) AS events FROM company_data.events GROUP BY user_id
        datasetName: per_user
      export: {as: '$context + {id: .datasetId}'}
  - log:
      call: ExecuteDml
      with:
        nql: |-
          ${ "INSERT INTO company_data.audit VALUES (\\($context.id), 1, '\\($workflow.runId) \\($task.startedAt)')" }
  - refresh:
      call: RefreshMaterializedView
      with: {datasetName: per_user}
""",
)


async def assert_exactly_once(stack: Stack, run: pb.Run) -> None:
    assert run.status == pb.RUN_STATUS_COMPLETED, run.error
    jobs = await stack.plane.jobs_for_run(run.id)
    assert sorted(j["metadata"]["task_name"] for j in jobs) == ["build", "log", "refresh"]
    assert {j["job_id"] for j in jobs} == {t.job_id for t in run.tasks}
    logged = [r for r in await stack.plane.rows("audit") if r["note"].startswith(run.id)]
    assert len(logged) == 1


@pytest.mark.parametrize(
    ("crash_point", "task_index"),
    [
        ("after_intent_commit", 0),
        ("after_submit", 0),
        ("after_job_completed", 0),
    ],
)
async def test_crash_at_a_dangerous_point_then_recover(
    stack: Stack, crash_point: str, task_index: int
) -> None:
    stub = await stack.start_daemon(crash_point)
    created = await stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=PIPELINE))
    run = (
        await stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=created.workflow.id))
    ).run
    assert stack.daemon is not None
    assert await stack.daemon.wait() == -9

    stub = await stack.start_daemon()
    await assert_exactly_once(stack, await run_to_end(stub, run.id))


async def test_crash_at_every_point_of_every_task(stack: Stack) -> None:
    """Each restart crashes again at the next dangerous point until the run is through."""
    stub = await stack.start_daemon("after_intent_commit")
    created = await stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=PIPELINE))
    run = (
        await stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=created.workflow.id))
    ).run
    assert stack.daemon is not None
    assert await stack.daemon.wait() == -9
    crashes = 1
    for point in ["after_submit", "after_job_completed", "after_intent_commit"] * 3:
        try:
            stub = await stack.start_daemon(point)
        except ExitedBeforeReady as exc:
            # Runs resume before the API serves: the resumed run can reach the crash point
            # before the ready line. That is a crash at the point as well.
            if exc.returncode != -9:
                raise
            crashes += 1
            continue
        if await completes_or_crashes(stack, stub, run.id):
            break
        crashes += 1
    assert crashes >= 6
    assert stack.daemon is not None
    await stack.daemon.stop()
    stub = await stack.start_daemon()
    await assert_exactly_once(stack, await run_to_end(stub, run.id))


async def completes_or_crashes(
    stack: Stack, stub: pb_grpc.WorkflowServiceStub, run_id: str
) -> bool:
    """True when the run completed, False when the daemon killed itself at its crash point."""
    assert stack.daemon is not None
    watcher = asyncio.create_task(run_to_end(stub, run_id))
    death = asyncio.create_task(stack.daemon.proc.wait())
    done, _ = await asyncio.wait({watcher, death}, return_when=asyncio.FIRST_COMPLETED)
    if watcher in done and watcher.exception() is None:
        death.cancel()
        return True
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
        await watcher
    await death
    return False


async def test_kill_while_awaiting_a_running_job(stack: Stack) -> None:
    text = workflow(
        "slowcrash",
        f"""\
  - slow:
      call: CreateMaterializedViewIfNotExists
      with: {{nql: "{SLOW_NQL.replace("300000", "25000")}", datasetName: slow_view}}
  - log:
      call: ExecuteDml
      with:
        nql: |-
          ${{ "INSERT INTO company_data.audit VALUES (1, 1, '\\($workflow.runId)')" }}
""",
    )
    stub = await stack.start_daemon()
    created = await stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=text))
    run = (
        await stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=created.workflow.id))
    ).run
    async for response in stub.WatchRun(pb.WatchRunRequest(run_id=run.id)):
        if response.event.type == pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED:
            job_id = response.event.job_id
            break
    assert (await stack.plane.job(job_id))["state"] in ("pending", "running")
    assert stack.daemon is not None
    await stack.daemon.kill9()

    stub = await stack.start_daemon()
    final = await run_to_end(stub, run.id)
    assert final.status == pb.RUN_STATUS_COMPLETED, final.error
    assert final.tasks[0].job_id == job_id
    jobs = await stack.plane.jobs_for_run(run.id)
    assert len(jobs) == 2
    logged = [r for r in await stack.plane.rows("audit") if r["note"] == run.id]
    assert len(logged) == 1


@pytest.mark.parametrize(
    ("crash_point", "job_exists"), [("after_intent_commit", False), ("after_submit", True)]
)
async def test_a_cancel_found_at_restart_submits_nothing_new(
    stack: Stack, crash_point: str, job_exists: bool
) -> None:
    """The process died with the first task's intent committed but its job id not recorded;
    the run was cancelled meanwhile. The restart must not create the job: it looks it up by
    its idempotency key, cancels it if it exists, else ends the task without submitting."""
    stub = await stack.start_daemon(crash_point)
    created = await stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=PIPELINE))
    run = (
        await stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=created.workflow.id))
    ).run
    assert stack.daemon is not None
    assert await stack.daemon.wait() == -9
    with sqlite3.connect(stack.tmp / "workflowd" / "workflowd.db") as conn:
        row = conn.execute(
            "SELECT status, job_id FROM task_instances WHERE run_id = ? AND ord = 1", (run.id,)
        )
        assert row.fetchone() == ("running", "")
        conn.execute(
            "UPDATE runs SET status = 'cancelling', cancel_reason = 'cancelled on request'"
            " WHERE id = ?",
            (run.id,),
        )
    before = await stack.plane.jobs_for_run(run.id)
    assert len(before) == (1 if job_exists else 0)

    stub = await stack.start_daemon()
    final = await run_to_end(stub, run.id)
    assert final.status == pb.RUN_STATUS_CANCELLED
    assert final.cancel_reason == "cancelled on request"
    [task] = final.tasks  # the later tasks never started
    assert task.status == pb.TASK_STATUS_CANCELLED
    jobs = await stack.plane.jobs_for_run(run.id)
    assert [j["job_id"] for j in jobs] == [j["job_id"] for j in before]
    if not job_exists:
        assert "job" not in task.reason
        return
    # The job was found, not created again; the task says what became of it (a quick one had
    # completed before the restart).
    assert task.job_id == jobs[0]["job_id"]
    said = {"completed": "had already ended (completed)", "cancelled": "was cancelled"}
    assert said[jobs[0]["state"]] in task.reason
