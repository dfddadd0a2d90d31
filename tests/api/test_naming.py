"""One way to name a workflow: every RPC that names one takes its workflow_id, or its namespace
and name; the fields requests had before answer exactly as they did; refusals say which field
and what would work. Through a real server on a loopback port."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.conftest import Daemon
from tests.engine.schedule_support import scheduled, ts
from tests.engine.support import finished
from tests.specs import spec
from workflowd.v1 import workflow_service_pb2 as pb

SET_TASK = "  - note:\n      set: {done: true}\n"
HOW = "name a workflow by its workflow_id, or by namespace and name"


def nightly(namespace: str = "finance", name: str = "nightly") -> str:
    return scheduled(name, "{cron: '@daily'}", SET_TASK).replace(
        "namespace: analytics", f"namespace: {namespace}"
    )


async def create(daemon: Daemon, text: str) -> pb.Workflow:
    return (await daemon.stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=text))).workflow


async def answer(daemon: Daemon, rpc: str, request: Any) -> Any:
    method = getattr(daemon.stub, rpc)
    if rpc.startswith("Watch"):
        return [response async for response in method(request)]
    return await method(request)


async def refused(daemon: Daemon, rpc: str, request: Any) -> tuple[str, list[tuple[str, str]]]:
    """The message and field violations of an INVALID_ARGUMENT answer."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await answer(daemon, rpc, request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    status = rpc_status.from_call(info.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return info.value.details() or "", [(v.field, v.description) for v in bad.field_violations]


async def test_every_rpc_naming_a_workflow_takes_namespace_and_name(daemon: Daemon) -> None:
    wf = await create(daemon, nightly())
    named = {"namespace": "finance", "name": "nightly"}
    stub = daemon.stub

    got = (await stub.GetWorkflow(pb.GetWorkflowRequest(workflow_id=wf.id))).workflow
    assert (got.namespace, got.name) == ("finance", "nightly")
    scheduled_now = await stub.ScheduleWorkflow(pb.ScheduleWorkflowRequest(**named))
    assert scheduled_now.schedule.workflow_id == wf.id
    assert scheduled_now.schedule.active
    schedule = (await stub.GetSchedule(pb.GetScheduleRequest(**named))).schedule
    assert schedule.workflow_id == wf.id
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    filled = await stub.BackfillWorkflow(
        pb.BackfillWorkflowRequest(
            start_time=ts(day - timedelta(days=2)), end_time=ts(day), **named
        )
    )
    assert filled.created == 2
    assert [r.run_id for r in filled.runs] == list(filled.run_ids)
    assert [r.scheduled_at.ToDatetime(tzinfo=UTC) for r in filled.runs] == [
        day - timedelta(days=2),
        day - timedelta(days=1),
    ]
    assert all(r.created for r in filled.runs)
    manual = (await stub.TriggerWorkflow(pb.TriggerWorkflowRequest(**named))).run
    listed = await stub.ListRuns(pb.ListRunsRequest(**named))
    assert {r.id for r in listed.runs} == {manual.id, *filled.run_ids}
    stopped = (await stub.UnscheduleWorkflow(pb.UnscheduleWorkflowRequest(**named))).schedule
    assert stopped.workflow_id == wf.id
    assert not stopped.active
    archived = (await stub.ArchiveWorkflow(pb.ArchiveWorkflowRequest(**named))).workflow
    assert archived.status == pb.WORKFLOW_STATUS_ARCHIVED


async def test_archive_takes_workflow_id_like_every_other_request(daemon: Daemon) -> None:
    wf = await create(daemon, nightly())
    archived = await daemon.stub.ArchiveWorkflow(pb.ArchiveWorkflowRequest(workflow_id=wf.id))
    assert archived.workflow.id == wf.id
    assert archived.workflow.status == pb.WORKFLOW_STATUS_ARCHIVED


async def test_the_old_fields_answer_as_before(daemon: Daemon) -> None:
    wf = await create(daemon, nightly())
    other = await create(daemon, nightly(name="other"))
    stub = daemon.stub
    by_id = (await stub.GetWorkflow(pb.GetWorkflowRequest(id=wf.id))).workflow
    assert by_id.id == wf.id
    assert by_id.specification == nightly()
    schedule = await stub.ScheduleWorkflow(pb.ScheduleWorkflowRequest(workflow_id=wf.id))
    assert schedule.schedule.workflow_id == wf.id
    assert (await stub.GetSchedule(pb.GetScheduleRequest(workflow_id=wf.id))).schedule.active
    run = (await stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=wf.id))).run
    await finished(daemon, run.id)
    await finished(
        daemon, (await stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=other.id))).run.id
    )
    listed = await stub.ListRuns(pb.ListRunsRequest(workflow_id=wf.id))
    assert [r.id for r in listed.runs] == [run.id]
    await stub.UnscheduleWorkflow(pb.UnscheduleWorkflowRequest(workflow_id=wf.id))
    archived = (await stub.ArchiveWorkflow(pb.ArchiveWorkflowRequest(id=wf.id))).workflow
    assert archived.status == pb.WORKFLOW_STATUS_ARCHIVED
    # A malformed old `id` is refused under its own name, as it was.
    said, violations = await refused(daemon, "GetWorkflow", pb.GetWorkflowRequest(id="nope"))
    assert said.startswith("id: 'nope' is not a workflow id (a UUID)")
    assert violations == [("id", f"'nope' is not a workflow id (a UUID): {HOW}")]
    said, _ = await refused(daemon, "ArchiveWorkflow", pb.ArchiveWorkflowRequest(id="nope"))
    assert said.startswith("id: 'nope' is not a workflow id (a UUID)")


async def test_refusals_say_which_field_and_what_would_work(daemon: Daemon) -> None:
    wf = await create(daemon, nightly())
    other = await create(daemon, nightly(name="other"))
    for rpc, make in [
        ("ScheduleWorkflow", pb.ScheduleWorkflowRequest),
        ("UnscheduleWorkflow", pb.UnscheduleWorkflowRequest),
        ("GetSchedule", pb.GetScheduleRequest),
        ("TriggerWorkflow", pb.TriggerWorkflowRequest),
        ("ArchiveWorkflow", pb.ArchiveWorkflowRequest),
        ("GetWorkflow", pb.GetWorkflowRequest),
    ]:
        said, violations = await refused(daemon, rpc, make())
        assert said == f"workflow_id: is required: {HOW}", rpc
        # The violation names the field once; its description does not repeat it.
        assert violations == [("workflow_id", f"is required: {HOW}")], rpc
        said, _ = await refused(daemon, rpc, make(workflow_id="daily-revenue"))
        assert said == f"workflow_id: 'daily-revenue' is not a workflow id (a UUID): {HOW}"
        said, _ = await refused(daemon, rpc, make(name="nightly"))
        assert said == f"namespace: is required with name: {HOW}", rpc
        said, _ = await refused(daemon, rpc, make(namespace="finance"))
        assert said == f"name: is required with namespace: {HOW}", rpc
        said, _ = await refused(
            daemon, rpc, make(workflow_id=wf.id, namespace="finance", name="other")
        )
        assert said == (
            "workflow_id: names finance/nightly, but namespace and name say finance/other: give "
            "one or the other"
        ), rpc
    said, _ = await refused(
        daemon, "GetWorkflow", pb.GetWorkflowRequest(id=wf.id, workflow_id=other.id)
    )
    assert said == "id: is the deprecated name of workflow_id and differs from it: give workflow_id"
    for rpc, make in [("ListRuns", pb.ListRunsRequest), ("WatchRuns", pb.WatchRunsRequest)]:
        said, _ = await refused(daemon, rpc, make(name="nightly"))
        assert said == f"namespace: is required with name: {HOW}", rpc
        said, _ = await refused(daemon, rpc, make(namespace="not a name"))
        assert said.startswith("namespace: 'not a name' is not a valid namespace"), rpc


async def test_runs_are_listed_and_watched_by_namespace(daemon: Daemon) -> None:
    finance = await create(daemon, nightly())
    analytics = await create(daemon, spec(tasks=SET_TASK))
    watch = daemon.stub.WatchRuns(pb.WatchRunsRequest(namespace="finance", name="nightly"))
    await watch.wait_for_connection()
    theirs = (
        await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=analytics.id))
    ).run
    ours = (
        await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=finance.id))
    ).run
    seen = []
    async for response in watch:
        seen.append(response.event.run_id)
        if response.event.type == pb.RUN_EVENT_TYPE_RUN_COMPLETED:
            break
    watch.cancel()
    assert set(seen) == {ours.id}
    listed = await daemon.stub.ListRuns(pb.ListRunsRequest(namespace="finance"))
    assert [r.id for r in listed.runs] == [ours.id]
    everything = await daemon.stub.ListRuns(pb.ListRunsRequest())
    assert {r.id for r in everything.runs} == {ours.id, theirs.id}


async def test_runs_are_found_by_the_start_of_their_id(daemon: Daemon) -> None:
    wf = await create(daemon, nightly())
    runs = [
        (await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=wf.id))).run
        for _ in range(3)
    ]
    for run in runs:
        for length in (8, 13, 36):  # through the first hyphen, and the whole id
            found = await daemon.stub.ListRuns(pb.ListRunsRequest(run_id_prefix=run.id[:length]))
            assert [r.id for r in found.runs] == [run.id]
    # One hex digit is a valid start: it matches the runs whose id starts with it.
    first = runs[0].id[0]
    found = await daemon.stub.ListRuns(pb.ListRunsRequest(run_id_prefix=first))
    assert {r.id for r in found.runs} == {r.id for r in runs if r.id.startswith(first)}
    for bad in ("C0FFEE", "c0ffee-", "xyz", "0" * 37):
        said, violations = await refused(daemon, "ListRuns", pb.ListRunsRequest(run_id_prefix=bad))
        assert said.startswith(f"run_id_prefix: {bad!r} is not the start of a run id"), said
        assert violations[0][0] == "run_id_prefix"
