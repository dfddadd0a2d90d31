"""Every failure path leaves no job behind and says what it did: jobs that may outlive their task
are cancelled (now, or in the background once the jobs system answers again), a cancelled run
starts nothing more, the workflow timeout covers the whole run, a job id is never lost, a
cancel is not an error, and time runs forward."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from tests.conftest import Daemon, eventually
from tests.engine.conftest import Rig
from tests.engine.schedule_support import T0
from tests.engine.support import (
    AUDIT_CSV,
    EVENTS_CSV,
    SLOW_NQL,
    Plane,
    apply,
    events_until_end,
    finished,
    occupy_workers,
    trigger,
    wait_for_event,
    workflow,
)
from tests.scheduler.manual_clock import ManualClock
from workflowd.store.runtx import RunTx
from workflowd.v1 import workflow_service_pb2 as pb

SLOW_THEN_LOG = workflow(
    "slow-then-log",
    f"""\
  - slow:
      call: CreateMaterializedViewIfNotExists
      with: {{nql: "{SLOW_NQL}", datasetName: slow_view}}
  - log:
      call: ExecuteDml
      with: {{nql: "INSERT INTO company_data.audit VALUES (1, 1, 'after')"}}
""",
)
QUICK_THEN_LOG = workflow(
    "quick-then-log",
    """\
  - quick:
      call: ExecuteDml
      with: {nql: "INSERT INTO company_data.audit VALUES (0, 0, 'first')"}
  - log:
      call: ExecuteDml
      with: {nql: "INSERT INTO company_data.audit VALUES (1, 1, 'second')"}
""",
    extra="timeout: {after: PT1H}\n",
)


async def load_tables(plane: Plane) -> None:
    await plane.load_csv("events", EVENTS_CSV)
    await plane.load_csv("audit", AUDIT_CSV)


async def test_an_outage_while_awaiting_fails_the_task_and_its_job_is_cancelled_later(
    rig: Rig,
) -> None:
    await load_tables(rig.plane)
    daemon = await rig.start(jobs_retry_deadline_s=1.0)
    run = await trigger(daemon, (await apply(daemon, SLOW_THEN_LOG)).id)
    submitted = await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED, 0)
    rig.proxy.fail_next(None, 503, path_prefix="/")
    rig.proxy.drop_streams()

    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_FAILED
    assert done.error.type.endswith("/errors/communication")
    assert f"its job {submitted.job_id} may still be running" in done.tasks[0].error.detail
    assert (await rig.plane.job(submitted.job_id))["state"] == "running"

    rig.proxy.heal()

    async def cancelled() -> bool:
        return (await rig.plane.job(submitted.job_id))["state"] == "cancelled"

    await eventually(cancelled, timeout_s=30)
    assert daemon.app.orphans is not None

    async def forgotten() -> bool:
        assert daemon.app.orphans is not None
        return daemon.app.orphans.pending == 0 and not await daemon.app.store.jobs_to_cancel()

    await eventually(forgotten)
    assert [j["job_id"] for j in await rig.plane.jobs_for_run(run.id)] == [submitted.job_id]


async def test_a_refused_status_read_cancels_the_job_and_says_so(rig: Rig) -> None:
    await load_tables(rig.plane)
    daemon = await rig.start()
    rig.proxy.fail_next(None, 403, method="GET", path_prefix="/jobs")
    run = await trigger(daemon, (await apply(daemon, SLOW_THEN_LOG)).id)
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_FAILED
    task = done.tasks[0]
    assert task.error.type.endswith("/errors/authorization")
    assert f"its job {task.job_id} was cancelled" in task.error.detail
    rig.proxy.heal()

    async def cancelled() -> bool:
        return (await rig.plane.job(task.job_id))["state"] == "cancelled"

    await eventually(cancelled)


async def test_a_cancelled_run_carries_its_reason_and_no_error(daemon: Daemon) -> None:
    plane = Plane.of(daemon)
    await load_tables(plane)
    run = await trigger(daemon, (await apply(daemon, SLOW_THEN_LOG)).id)
    await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED, 0)
    await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=run.id, reason="wrong day"))
    events = await events_until_end(daemon, run.id)
    done = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id))).run
    assert done.status == pb.RUN_STATUS_CANCELLED
    assert not done.HasField("error")
    assert done.cancel_reason == "cancelled on request: wrong day"
    assert not done.tasks[0].HasField("error")
    assert [t.status for t in done.tasks] == [pb.TASK_STATUS_CANCELLED]
    reasons = {e.type: e.reason for e in events}
    assert reasons[pb.RUN_EVENT_TYPE_RUN_CANCELLING] == "cancelled on request: wrong day"
    assert reasons[pb.RUN_EVENT_TYPE_RUN_CANCELLED] == "cancelled on request: wrong day"
    assert not events[-1].HasField("error")
    await plane.aclose()


async def test_a_job_the_jobs_system_cancelled_on_its_own_says_so(daemon: Daemon) -> None:
    plane = Plane.of(daemon)
    await load_tables(plane)
    run = await trigger(daemon, (await apply(daemon, SLOW_THEN_LOG)).id)
    submitted = await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED, 0)
    async with plane.session.post(f"/jobs/{submitted.job_id}/cancel") as resp:
        assert resp.status == 200
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_CANCELLED
    assert not done.HasField("error")
    said = f"the jobs system cancelled task slow's job {submitted.job_id} on its own"
    assert done.cancel_reason == said
    assert done.tasks[0].status == pb.TASK_STATUS_CANCELLED
    assert done.tasks[0].error.title == said
    await plane.aclose()


async def test_no_job_is_submitted_once_the_workflow_timeout_has_passed(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    clock = ManualClock(T0)
    daemon = await start_daemon(clock=clock, dataplane_workers=1)
    plane = Plane.of(daemon)
    await load_tables(plane)
    [blocker] = await occupy_workers(plane, 1)  # the first task's job waits for a worker
    run = await trigger(daemon, (await apply(daemon, QUICK_THEN_LOG)).id)
    await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED, 0)
    clock.advance(timedelta(hours=2))  # the run's hour is over while its first job waits

    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_FAILED
    assert done.error.type.endswith("/errors/timeout")
    assert done.error.title == "the workflow timed out after 3600 s"
    # The first task failed with the run, its job cancelled; the second never started.
    [quick] = done.tasks
    assert quick.status == pb.TASK_STATUS_FAILED
    assert quick.error.title == done.error.title
    assert f"its job {quick.job_id} was cancelled" in quick.error.detail
    jobs = await plane.jobs_for_run(run.id)
    assert [j["metadata"]["task_name"] for j in jobs] == ["quick"]
    async with plane.session.post(f"/jobs/{blocker}/cancel") as resp:
        assert resp.status == 200
    await plane.aclose()


async def test_a_job_id_survives_a_failed_side_commit(
    start_daemon: Callable[..., Awaitable[Daemon]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The side commit that records a job id shortly after its POST fails here (the store
    raises inside it, once); the task's completion records the id anyway."""
    daemon = await start_daemon(dataplane_workers=2)  # its own plane: all its workers held
    plane = Plane.of(daemon)
    await load_tables(plane)
    failed: list[str] = []
    record_job = RunTx.record_job

    def failing_once(self: RunTx, key: str, job_id: str) -> None:
        if not failed:
            failed.append(job_id)
            raise OSError("disk full (injected)")
        record_job(self, key, job_id)

    monkeypatch.setattr(RunTx, "record_job", failing_once)
    # The job waits for a worker until its side commit has failed: it cannot end first.
    blockers = await occupy_workers(plane, 2)
    text = workflow(
        "side-commit",
        "  - wait:\n      call: CreateMaterializedViewIfNotExists\n"
        "      with: {nql: 'SELECT count(*) AS n FROM range(30000000)', datasetName: counted}\n",
    )
    run = await trigger(daemon, (await apply(daemon, text)).id)

    async def side_commit_failed() -> bool:
        return bool(failed)

    await eventually(side_commit_failed)
    for blocker in blockers:
        async with plane.session.post(f"/jobs/{blocker}/cancel") as resp:
            assert resp.status == 200
    events = await events_until_end(daemon, run.id)
    done = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id))).run
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error
    [job] = await plane.jobs_for_run(run.id)
    assert failed == [job["job_id"]]
    assert done.tasks[0].job_id == job["job_id"]
    submitted = [e for e in events if e.type == pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED]
    assert [e.job_id for e in submitted] == [job["job_id"]]
    await plane.aclose()


async def test_time_runs_forward_from_task_to_task(daemon: Daemon) -> None:
    plane = Plane.of(daemon)
    await load_tables(plane)
    tasks = "".join(
        f"  - t{i}:\n      call: ExecuteDml\n"
        f"      with: {{nql: \"INSERT INTO company_data.audit VALUES ({i}, 0, 't')\"}}\n"
        for i in range(6)
    )
    run = await trigger(daemon, (await apply(daemon, workflow("forward", tasks))).id)
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error
    for before, after in zip(done.tasks, done.tasks[1:], strict=False):
        assert after.started_at.ToDatetime() >= before.ended_at.ToDatetime()
    await plane.aclose()


async def test_watch_runs_validates_like_listing(daemon: Daemon) -> None:
    import grpc

    for request, says in [
        (pb.WatchRunsRequest(statuses=[77]), "statuses[0]: unknown run status 77"),
        (pb.WatchRunsRequest(after_global_seq=-1), "after_global_seq: must not be negative"),
        (pb.WatchRunsRequest(after_global_seq=10**9), "is ahead of the event log"),
        (pb.WatchRunsRequest(workflow_id="nope"), "is not a workflow id"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in daemon.stub.WatchRuns(request):
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert says in (info.value.details() or "")


async def test_reapplying_an_identical_spec_with_new_tags_updates_them(daemon: Daemon) -> None:
    first = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=QUICK_THEN_LOG, tags=["a"])
    )
    again = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=QUICK_THEN_LOG, tags=["b", "c"])
    )
    assert not again.created
    assert list(again.workflow.tags) == ["b", "c"]
    kept = await daemon.stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=QUICK_THEN_LOG))
    assert list(kept.workflow.tags) == ["b", "c"]
    assert first.workflow.id == kept.workflow.id
