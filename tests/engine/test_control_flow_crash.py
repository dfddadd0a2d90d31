"""kill -9 in the middle of control flow: the daemon (a real subprocess) restarts from the
committed cursor, and the data plane (never killed) holds exactly one job per call instance and
attempt: mid-loop, mid-fork, during a retry's backoff, during a wait, and right after a
`compete` winner's job ended."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import eventually
from tests.engine.crash_support import Stack, run_to_end
from tests.engine.support import SLOW_NQL, workflow
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow


async def start(
    stack: Stack, text: str, crash_point: str = ""
) -> tuple[pb_grpc.WorkflowServiceStub, pb.Run]:
    stub = await stack.start_daemon(crash_point)
    created = await stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=text))
    triggered = await stub.TriggerWorkflow(
        pb.TriggerWorkflowRequest(workflow_id=created.workflow.id)
    )
    return stub, triggered.run


async def until_event(
    stub: pb_grpc.WorkflowServiceStub, run_id: str, kind: int, count: int = 1
) -> pb.RunEvent:
    seen = 0
    async for response in stub.WatchRun(pb.WatchRunRequest(run_id=run_id)):
        if response.event.type == kind:
            seen += 1
            if seen == count:
                return response.event
    raise AssertionError(f"run {run_id} ended before event {kind} #{count}")


async def keys_of_jobs(stack: Stack, run_id: str) -> list[str]:
    jobs = await stack.plane.jobs_for_run(run_id)
    keys = sorted(str(j["idempotency_key"]).split(":", 1)[1] for j in jobs)
    assert len(keys) == len(set(keys)), f"an instance had two jobs: {keys}"
    return keys


async def test_kill_mid_loop_each_iteration_has_one_job(stack: Stack) -> None:
    text = workflow(
        "crash-loop",
        """\
  - each:
      for: {in: '[0, 1, 2, 3]'}
      do:
        - log:
            call: ExecuteDml
            with:
              nql: '${ "INSERT INTO company_data.audit VALUES (\\($index), 0, ''\\($workflow.runId)'')" }'
""",
    )
    stub, run = await start(stack, text)
    await until_event(stub, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED, count=2)
    assert stack.daemon is not None
    await stack.daemon.kill9()

    stub = await stack.start_daemon()
    final = await run_to_end(stub, run.id)
    assert final.status == pb.RUN_STATUS_COMPLETED, final.error
    assert await keys_of_jobs(stack, run.id) == [f"/do/0/each/do/0/log@i{i}" for i in range(4)]
    logged = sorted(r["dataset_id"] for r in await stack.plane.rows("audit") if r["note"] == run.id)
    assert logged == [0, 1, 2, 3]  # each iteration's effect exactly once


async def test_kill_mid_fork_each_branch_has_one_job(stack: Stack) -> None:
    slower = SLOW_NQL.replace("300000", "8000")
    text = workflow(
        "crash-fork",
        f"""\
  - both:
      fork:
        branches:
          - left:
              call: CreateMaterializedViewIfNotExists
              with: {{nql: "{slower}", datasetName: left_view}}
          - right:
              call: CreateMaterializedViewIfNotExists
              with: {{nql: "{slower}", datasetName: right_view}}
""",
    )
    stub, run = await start(stack, text)
    await until_event(stub, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED, count=2)
    assert stack.daemon is not None
    await stack.daemon.kill9()

    stub = await stack.start_daemon()
    final = await run_to_end(stub, run.id)
    assert final.status == pb.RUN_STATUS_COMPLETED, final.error
    assert await keys_of_jobs(stack, run.id) == [
        "/do/0/both/fork/branches/0/left",
        "/do/0/both/fork/branches/1/right",
    ]


async def test_kill_during_a_backoff_keeps_its_instant_and_adds_no_attempt(stack: Stack) -> None:
    text = workflow(
        "crash-backoff",
        """\
  - guarded:
      try:
        - load:
            call: ExecuteDml
            with: {nql: "INSERT INTO company_data.missing VALUES (1)"}
      catch:
        retry: {delay: {seconds: 3}, limit: {attempt: {count: 1}}}
""",
    )
    stub, run = await start(stack, text)
    retrying = await until_event(stub, run.id, pb.RUN_EVENT_TYPE_TASK_RETRYING)
    until = retrying.until.ToDatetime(tzinfo=UTC)
    assert stack.daemon is not None
    await stack.daemon.kill9()

    stub = await stack.start_daemon()
    resumed = (await stub.GetRun(pb.GetRunRequest(run_id=run.id))).run
    assert resumed.tasks[0].wake_at == retrying.until  # the stored instant, not a new one
    final = await run_to_end(stub, run.id)
    assert final.status == pb.RUN_STATUS_FAILED  # both attempts fail: the table never comes
    keys = await keys_of_jobs(stack, run.id)
    assert keys == ["/do/0/guarded/try/0/load", "/do/0/guarded/try/0/load@a2"]
    second = next(
        j for j in await stack.plane.jobs_for_run(run.id) if j["idempotency_key"].endswith("@a2")
    )
    assert datetime.fromisoformat(second["created_at"]) >= until  # not retried early


async def test_kill_during_a_wait_keeps_its_wake_up(stack: Stack) -> None:
    text = workflow(
        "crash-wait",
        """\
  - pause: {wait: PT3S}
  - log:
      call: ExecuteDml
      with: {nql: "INSERT INTO company_data.audit VALUES (9, 9, 'after the wait')"}
""",
    )
    stub, run = await start(stack, text)
    waiting = await until_event(stub, run.id, pb.RUN_EVENT_TYPE_TASK_WAITING)
    assert stack.daemon is not None
    await stack.daemon.kill9()

    stub = await stack.start_daemon()
    final = await run_to_end(stub, run.id)
    assert final.status == pb.RUN_STATUS_COMPLETED, final.error
    events = [r.event async for r in stub.WatchRun(pb.WatchRunRequest(run_id=run.id))]
    waits = [e.until for e in events if e.type == pb.RUN_EVENT_TYPE_TASK_WAITING]
    assert waits == [waiting.until]  # the stored wake-up: the wait neither started again nor ended
    assert final.tasks[0].ended_at.ToDatetime() >= waiting.until.ToDatetime()  # not early
    assert await keys_of_jobs(stack, run.id) == ["/do/1/log"]
    assert stack.daemon is not None
    said = [*stack.daemon.before_ready, *stack.daemon.last_lines]
    assert any(", 1 run resumed)" in line for line in said), said  # one run, not "1 runs"


async def test_kill_right_after_a_compete_winner_cancels_the_losers_jobs(stack: Stack) -> None:
    text = workflow(
        "crash-race",
        f"""\
  - race:
      fork:
        compete: true
        branches:
          - slow:
              call: CreateMaterializedViewIfNotExists
              with: {{nql: "{SLOW_NQL}", datasetName: slow_view}}
          - fast:
              call: CreateMaterializedViewIfNotExists
              with: {{nql: SELECT 1 AS one, datasetName: fast_view}}
""",
    )
    # The daemon kills itself as the first job ends (the winner's), before anything is committed.
    stub, run = await start(stack, text, crash_point="after_job_completed")
    assert stack.daemon is not None
    assert await stack.daemon.wait() == -9

    stub = await stack.start_daemon()
    final = await run_to_end(stub, run.id)
    assert final.status == pb.RUN_STATUS_COMPLETED, final.error
    by_key = {t.key: t for t in final.tasks}
    loser = by_key["/do/0/race/fork/branches/0/slow"]
    assert loser.status == pb.TASK_STATUS_CANCELLED
    assert (await stack.plane.job(loser.job_id))["state"] in ("cancelled", "pending_cancellation")

    async def loser_job_cancelled() -> bool:  # its query interrupted: it ends cancelled
        return (await stack.plane.job(loser.job_id))["state"] == "cancelled"

    await eventually(loser_job_cancelled, timeout_s=60)
    assert await keys_of_jobs(stack, run.id) == [
        "/do/0/race/fork/branches/0/slow",
        "/do/0/race/fork/branches/1/fast",
    ]


async def test_kill_during_a_rerun_submits_no_job_twice(stack: Stack) -> None:
    text = workflow(
        "crash-rerun",
        """\
  - build:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT user_id FROM company_data.events, datasetName: users}
  - count:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT COUNT(1) AS n FROM company_data.late, datasetName: counted}
  - log:
      call: ExecuteDml
      with:
        nql: '${ "INSERT INTO company_data.audit VALUES (7, 7, ''\\($workflow.runId)'')" }'
""",
    )
    stub, run = await start(stack, text)
    failed = await run_to_end(stub, run.id)
    assert failed.status == pb.RUN_STATUS_FAILED
    await stack.plane.load_csv("late", "x\n1\n")
    assert stack.daemon is not None
    await stack.daemon.stop()
    # The daemon kills itself once the re-run's first live task committed its intent.
    stub = await stack.start_daemon("after_intent_commit")
    again = (await stub.RerunRun(pb.RerunRunRequest(run_id=failed.id))).run
    assert stack.daemon is not None
    assert await stack.daemon.wait() == -9

    stub = await stack.start_daemon()
    final = await run_to_end(stub, again.id)
    assert final.status == pb.RUN_STATUS_COMPLETED, final.error
    assert [t.reused for t in final.tasks] == [True, False, False]
    assert await keys_of_jobs(stack, again.id) == ["/do/1/count", "/do/2/log"]
    logged = [r for r in await stack.plane.rows("audit") if r["note"] == again.id]
    assert len(logged) == 1
