"""Watching runs live: replay then stream, resume by sequence, many watchers, drain."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from tests.conftest import Daemon
from tests.engine.support import (
    TERMINAL,
    Plane,
    apply,
    events_until_end,
    finished,
    trigger,
    workflow,
)
from workflowd.v1 import workflow_service_pb2 as pb

THREE = workflow(
    "three",
    """\
  - a:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT 1 AS one, datasetName: v_a}
  - b:
      call: RefreshMaterializedView
      with: {datasetName: v_a}
  - c:
      call: ExecuteDml
      with: {nql: "INSERT INTO company_data.audit VALUES (1, 1, 'c')"}
""",
)


def assert_well_formed(events: list[pb.RunEvent]) -> None:
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + len(events)))
    assert events[-1].run_status in TERMINAL
    globals_ = [e.global_seq for e in events]
    assert globals_ == sorted(globals_)


async def test_watch_from_zero_sees_the_whole_story(daemon: Daemon, plane: Plane) -> None:
    wf = await apply(daemon, THREE)
    run = await trigger(daemon, wf.id)
    events = await events_until_end(daemon, run.id)
    assert_well_formed(events)
    assert events[0].seq == 1
    assert events[0].type == pb.RUN_EVENT_TYPE_RUN_CREATED
    kinds = [e.type for e in events]
    assert kinds[1] == pb.RUN_EVENT_TYPE_RUN_STARTED
    assert kinds.count(pb.RUN_EVENT_TYPE_TASK_STARTED) == 3
    assert kinds.count(pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED) == 3
    assert kinds.count(pb.RUN_EVENT_TYPE_TASK_COMPLETED) == 3
    assert kinds[-1] == pb.RUN_EVENT_TYPE_RUN_COMPLETED
    submitted = [e for e in events if e.type == pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED]
    final = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id))).run
    assert [e.job_id for e in submitted] == [t.job_id for t in final.tasks]


async def test_watch_from_a_middle_seq_and_after_the_end(daemon: Daemon, plane: Plane) -> None:
    wf = await apply(daemon, THREE)
    run = await trigger(daemon, wf.id)
    everything = await events_until_end(daemon, run.id)
    tail = await events_until_end(daemon, run.id, after_seq=4)
    assert [e.seq for e in tail] == [e.seq for e in everything[4:]]
    assert tail == everything[4:]
    nothing_after_end = []
    async with asyncio.timeout(10):
        async for r in daemon.stub.WatchRun(
            pb.WatchRunRequest(run_id=run.id, after_seq=everything[-1].seq)
        ):
            nothing_after_end.append(r.event)
    assert nothing_after_end == []


async def test_many_concurrent_watchers_see_the_same_events(daemon: Daemon, plane: Plane) -> None:
    wf = await apply(daemon, THREE)
    run = await trigger(daemon, wf.id)
    results = await asyncio.gather(*(events_until_end(daemon, run.id) for _ in range(60)))
    for events in results:
        assert_well_formed(events)
        assert events == results[0]


async def test_a_watcher_that_disconnects_resumes_without_gap_or_repeat(
    daemon: Daemon, plane: Plane
) -> None:
    wf = await apply(daemon, THREE)
    run = await trigger(daemon, wf.id)
    seen: list[pb.RunEvent] = []
    last = 0
    while not seen or seen[-1].run_status not in TERMINAL:
        call = daemon.stub.WatchRun(pb.WatchRunRequest(run_id=run.id, after_seq=last))
        async for response in call:
            seen.append(response.event)
            last = response.event.seq
            call.cancel()  # drop the connection after every event
            break
    assert_well_formed(seen)
    assert seen == await events_until_end(daemon, run.id)


async def test_events_never_run_ahead_of_the_store(daemon: Daemon, plane: Plane) -> None:
    wf = await apply(daemon, THREE)
    run = await trigger(daemon, wf.id)
    async for response in daemon.stub.WatchRun(pb.WatchRunRequest(run_id=run.id)):
        event = response.event
        stored = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id))).run
        if event.run_status in TERMINAL:
            assert stored.status == event.run_status
        if event.task_index >= 0:
            status = stored.tasks[event.task_index].status
            if event.task_status == pb.TASK_STATUS_RUNNING:
                assert status != pb.TASK_STATUS_PENDING
            else:
                assert status == event.task_status
            if event.job_id:
                assert stored.tasks[event.task_index].job_id == event.job_id


async def test_watch_runs_streams_many_runs_and_resumes_by_global_seq(
    daemon: Daemon, plane: Plane
) -> None:
    wf = await apply(daemon, THREE)
    warmup = await events_until_end(daemon, (await trigger(daemon, wf.id)).id)
    start = warmup[-1].global_seq
    runs = [await trigger(daemon, wf.id) for _ in range(3)]
    collected: list[pb.RunEvent] = []
    call = daemon.stub.WatchRuns(pb.WatchRunsRequest(workflow_id=wf.id, after_global_seq=start))
    async with asyncio.timeout(30):
        async for response in call:
            collected.append(response.event)
            if sum(e.run_status in TERMINAL for e in collected) == 3:
                break
    call.cancel()
    assert {e.run_id for e in collected} == {r.id for r in runs}
    assert [e.global_seq for e in collected] == sorted(e.global_seq for e in collected)
    for r in runs:
        per_run = [e for e in collected if e.run_id == r.id]
        assert per_run == await events_until_end(daemon, r.id)

    middle = collected[len(collected) // 2].global_seq
    resumed: list[pb.RunEvent] = []
    call = daemon.stub.WatchRuns(pb.WatchRunsRequest(workflow_id=wf.id, after_global_seq=middle))
    async with asyncio.timeout(30):
        async for response in call:
            resumed.append(response.event)
            if response.event.global_seq == collected[-1].global_seq:
                break
    call.cancel()
    assert resumed == [e for e in collected if e.global_seq > middle]


async def test_watch_runs_filters_by_status(daemon: Daemon, plane: Plane) -> None:
    wf = await apply(daemon, THREE)
    warmup = await events_until_end(daemon, (await trigger(daemon, wf.id)).id)
    run = await trigger(daemon, wf.id)
    call = daemon.stub.WatchRuns(
        pb.WatchRunsRequest(
            statuses=[pb.RUN_STATUS_COMPLETED], after_global_seq=warmup[-1].global_seq
        )
    )
    async with asyncio.timeout(30):
        async for response in call:
            assert response.event.run_status == pb.RUN_STATUS_COMPLETED
            assert response.event.run_id == run.id
            break
    call.cancel()


async def test_watching_an_unknown_run_is_not_found(daemon: Daemon) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in daemon.stub.WatchRun(pb.WatchRunRequest(run_id=str(uuid.uuid4()))):
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watching_a_malformed_run_id_is_invalid(daemon: Daemon) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in daemon.stub.WatchRun(pb.WatchRunRequest(run_id="no-such-run")):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "run_id: 'no-such-run' is not a run id (a UUID)" in (info.value.details() or "")


async def test_drain_ends_streams_with_unavailable(daemon: Daemon, plane: Plane) -> None:
    wf = await apply(daemon, THREE)
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    stream = daemon.stub.WatchRuns(pb.WatchRunsRequest())
    await stream.wait_for_connection()
    await daemon.app.drain()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stream:
            pass
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert run.status == pb.RUN_STATUS_COMPLETED


async def test_live_watch_runs_misses_nothing_once_headers_arrive(
    daemon: Daemon, plane: Plane
) -> None:
    wf = await apply(daemon, THREE)
    call = daemon.stub.WatchRuns(pb.WatchRunsRequest(namespace="analytics"))
    await call.wait_for_connection()
    run = await trigger(daemon, wf.id)
    collected = []
    async with asyncio.timeout(30):
        async for response in call:
            collected.append(response.event)
            if response.event.run_status in TERMINAL:
                break
    call.cancel()
    assert collected == await events_until_end(daemon, run.id)
