"""Deleting runs and workflows, and unarchiving, on a real daemon (gRPC, SQLite, the local data
plane): only what has ended and no active run needs goes, with its tasks and events; a
company's stored bytes shrink by it; a watcher resuming from before a deleted event is told."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from tests.conftest import Daemon
from tests.engine.backends import each_store, stored
from tests.engine.support import events_until_end, finished, wait_for_event, workflow
from workflowd.v1 import workflow_service_pb2 as pb

__all__ = ["each_store"]  # the fixture, used by name

CALL = (
    "  - view:\n      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: SELECT 1 AS one, datasetName: deleted_view}\n"
)
PAUSE = "  - pause: {wait: PT1H}\n"


@pytest.fixture
async def daemon(each_store: Callable[..., Awaitable[Daemon]]) -> Daemon:
    return await each_store()


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def create(daemon: Daemon, name: str, tasks: str, version: str = "1.0.0") -> pb.Workflow:
    response = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=workflow(name, tasks, version=version))
    )
    return response.workflow


async def trigger(daemon: Daemon, workflow_id: str) -> pb.Run:
    response = await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=workflow_id))
    return response.run


async def cancel(daemon: Daemon, run_id: str) -> None:
    await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=run_id))
    await finished(daemon, run_id)


async def test_an_ended_run_is_deleted_with_its_tasks_events_and_bytes(daemon: Daemon) -> None:
    wf = await create(daemon, "deleted", CALL)
    kept = await finished(daemon, (await trigger(daemon, wf.id)).id)
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    assert run.status == pb.RUN_STATUS_COMPLETED, run.error
    assert stored(daemon, "SELECT COUNT(*) FROM task_instances WHERE run_id = ?", run.id) == [(1,)]
    before = stored(daemon, "SELECT stored_bytes FROM company_usage")[0][0]

    response = await daemon.stub.DeleteRun(pb.DeleteRunRequest(run_id=run.id))
    assert response.run_id == run.id
    for table, column in (("runs", "id"), ("task_instances", "run_id"), ("run_events", "run_id")):
        assert stored(daemon, f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", run.id) == [(0,)]
    after = stored(daemon, "SELECT stored_bytes FROM company_usage")[0][0]
    assert 0 < after < before
    for call in (
        daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id)),
        daemon.stub.DeleteRun(pb.DeleteRunRequest(run_id=run.id)),
        events_until_end(daemon, run.id),
    ):
        error = await refused(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error.details() == f"run {run.id} not found"
    # The other run is untouched.
    got = await daemon.stub.GetRun(pb.GetRunRequest(run_id=kept.id))
    assert got.run.status == pb.RUN_STATUS_COMPLETED
    assert len(await events_until_end(daemon, kept.id)) == len(
        stored(daemon, "SELECT seq FROM run_events WHERE run_id = ?", kept.id)
    )


async def test_an_active_run_and_the_original_of_an_active_rerun_are_not_deleted(
    daemon: Daemon,
) -> None:
    wf = await create(daemon, "paused", PAUSE)
    run = await trigger(daemon, wf.id)
    await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_WAITING)
    error = await refused(daemon.stub.DeleteRun(pb.DeleteRunRequest(run_id=run.id)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (
        f"run {run.id} is running: only an ended run can be deleted; cancel it with CancelRun first"
    )
    await cancel(daemon, run.id)
    rerun = await daemon.stub.RerunRun(pb.RerunRunRequest(run_id=run.id, start="start"))
    await wait_for_event(daemon, rerun.run.id, pb.RUN_EVENT_TYPE_TASK_WAITING)
    error = await refused(daemon.stub.DeleteRun(pb.DeleteRunRequest(run_id=run.id)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (
        f"run {run.id} cannot be deleted yet: run {rerun.run.id} re-runs it and reads its outcomes"
    )
    await cancel(daemon, rerun.run.id)
    await daemon.stub.DeleteRun(pb.DeleteRunRequest(run_id=run.id))
    # The re-run stays, naming the run it re-ran.
    got = await daemon.stub.GetRun(pb.GetRunRequest(run_id=rerun.run.id))
    assert got.run.rerun_of == run.id


async def test_only_an_archived_workflow_without_active_runs_is_deleted_and_its_name_is_free(
    daemon: Daemon,
) -> None:
    wf = await create(daemon, "doomed", PAUSE)
    await create(daemon, "doomed", PAUSE, version="2.0.0")
    ended = [await trigger(daemon, wf.id) for _ in range(3)]
    for run in ended:
        await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_WAITING)
        await cancel(daemon, run.id)
    error = await refused(daemon.stub.DeleteWorkflow(pb.DeleteWorkflowRequest(workflow_id=wf.id)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (error.details() or "").startswith("workflow analytics/doomed is not archived")
    active = await trigger(daemon, wf.id)
    await wait_for_event(daemon, active.id, pb.RUN_EVENT_TYPE_TASK_WAITING)
    await daemon.stub.ArchiveWorkflow(pb.ArchiveWorkflowRequest(workflow_id=wf.id))
    error = await refused(
        daemon.stub.DeleteWorkflow(pb.DeleteWorkflowRequest(namespace="analytics", name="doomed"))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (
        "workflow analytics/doomed has 1 active run: cancel them with CancelRun, then delete it"
    )
    assert stored(daemon, "SELECT COUNT(*) FROM runs WHERE workflow_id = ?", wf.id) == [(4,)]
    await cancel(daemon, active.id)

    deleted = await daemon.stub.DeleteWorkflow(
        pb.DeleteWorkflowRequest(namespace="analytics", name="doomed")
    )
    assert (deleted.deleted_runs, deleted.deleted_versions) == (4, 2)
    for table, column in (
        ("workflows", "id"),
        ("workflow_versions", "workflow_id"),
        ("runs", "workflow_id"),
        ("run_events", "workflow_id"),
        ("schedules", "workflow_id"),
    ):
        assert stored(daemon, f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", wf.id) == [(0,)]
    error = await refused(daemon.stub.GetWorkflow(pb.GetWorkflowRequest(workflow_id=wf.id)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    again = await create(daemon, "doomed", CALL)
    assert again.id != wf.id
    assert list(again.versions) == ["1.0.0"]
    run = await finished(daemon, (await trigger(daemon, again.id)).id)
    assert run.status == pb.RUN_STATUS_COMPLETED, run.error


async def test_an_unarchived_workflow_takes_runs_again_and_its_schedule_stays_stopped(
    daemon: Daemon,
) -> None:
    text = workflow("revived", CALL, extra="schedule: {cron: '@daily'}\n")
    wf = (await daemon.stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=text))).workflow
    await daemon.stub.ScheduleWorkflow(pb.ScheduleWorkflowRequest(workflow_id=wf.id))
    await daemon.stub.ArchiveWorkflow(pb.ArchiveWorkflowRequest(workflow_id=wf.id))
    error = await refused(trigger(daemon, wf.id))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    response = await daemon.stub.UnarchiveWorkflow(
        pb.UnarchiveWorkflowRequest(namespace="analytics", name="revived")
    )
    assert response.workflow.status == pb.WORKFLOW_STATUS_ACTIVE
    assert not response.workflow.HasField("archived_at")
    schedule = await daemon.stub.GetSchedule(pb.GetScheduleRequest(workflow_id=wf.id))
    assert not schedule.schedule.active
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    assert run.status == pb.RUN_STATUS_COMPLETED, run.error
    # Unarchiving an active workflow changes nothing.
    again = await daemon.stub.UnarchiveWorkflow(pb.UnarchiveWorkflowRequest(workflow_id=wf.id))
    assert again.workflow.status == pb.WORKFLOW_STATUS_ACTIVE


async def test_a_watcher_resuming_from_before_a_deleted_event_is_told(daemon: Daemon) -> None:
    wf = await create(daemon, "watched", CALL)
    first = await finished(daemon, (await trigger(daemon, wf.id)).id)
    second = await finished(daemon, (await trigger(daemon, wf.id)).id)
    events = await events_until_end(daemon, second.id)
    first_last = max(seq for (seq,) in stored(
        daemon, "SELECT company_seq FROM run_events WHERE run_id = ?", first.id
    ))  # fmt: skip
    await daemon.stub.DeleteRun(pb.DeleteRunRequest(run_id=first.id))

    for after in (1, first_last - 1):
        error = await refused(
            _watch(daemon, pb.WatchRunsRequest(after_global_seq=after), until=events[-1])
        )
        assert error.code() == grpc.StatusCode.OUT_OF_RANGE
        assert error.details() == (
            f"after_global_seq {after} is older than what is kept: events up to {first_last}"
            f" were deleted (retention or deleted runs); the oldest kept sequence is"
            f" {first_last + 1}: resume from after_global_seq {first_last}, or 0 for live"
            " events only"
        )
    # From the oldest kept position, the rest comes, the second run's end included.
    seen = await _watch(daemon, pb.WatchRunsRequest(after_global_seq=first_last), until=events[-1])
    assert [e.run_id for e in seen] == [second.id] * len(events)


async def _watch(daemon: Daemon, request: pb.WatchRunsRequest, until: pb.RunEvent) -> list[Any]:
    seen = []
    stream = daemon.stub.WatchRuns(request)
    async for response in stream:
        seen.append(response.event)
        if response.event.global_seq >= until.global_seq:
            stream.cancel()
            break
    return seen
