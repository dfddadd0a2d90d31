"""Bad schedule requests: the right status, a sentence that names the problem, and nothing
stored changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import grpc
import pytest
from google.protobuf import duration_pb2

from tests.conftest import Daemon
from tests.engine.schedule_support import T0, activate, create, get_schedule, scheduled, ts
from tests.engine.support import workflow
from tests.scheduler.manual_clock import ManualClock
from workflowd.v1 import workflow_service_pb2 as pb


@pytest.fixture
async def daemon(start_daemon: Callable[..., Awaitable[Daemon]]) -> Daemon:
    return await start_daemon(clock=ManualClock(T0))


@pytest.mark.parametrize(
    ("schedule", "says"),
    [
        ("{cron: '61 * * * *'}", "cron field 'minute' value 61 is out of range 0-59"),
        ("{cron: '*/90 * * * *'}", "cron field 'minute' step 90 is larger than its range 0-59"),
        ("{cron: 'CRON_TZ=Mars/Olympus 0 6 * * *'}", "unknown time zone 'Mars/Olympus'"),
        ("{cron: '0 0 30 2 *'}", "never fires"),
        ("{every: PT0.5S}", "schedule.every must be a duration between 1 second and 366 days"),
        ("{after: PT1M}", "schedule.after is not supported yet"),
    ],
)
async def test_a_bad_schedule_block_is_refused_at_creation(
    daemon: Daemon, schedule: str, says: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await create(daemon, scheduled("bad", schedule))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in (info.value.details() or "")
    assert list((await daemon.stub.ListWorkflows(pb.ListWorkflowsRequest())).workflows) == []


async def test_scheduling_a_workflow_without_a_schedule_block_is_a_failed_precondition(
    daemon: Daemon,
) -> None:
    plain = await create(
        daemon,
        workflow(
            "plain", "  - one:\n      call: RefreshMaterializedView\n      with: {datasetName: v}\n"
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await activate(daemon, plain.id)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (info.value.details() or "").startswith(
        "workflow analytics/plain version 1.0.0 has no schedule block"
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get_schedule(daemon, plain.id)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"overlap_policy": 42}, "overlap_policy: unknown overlap policy 42"),
        ({"catchup_policy": 9}, "catchup_policy: unknown catch-up policy 9"),
        (
            {"catchup_window": duration_pb2.Duration(seconds=-5)},
            "catchup_window: must be between 0 and 366 days",
        ),
    ],
)
async def test_bad_policies_change_nothing(
    daemon: Daemon, fields: dict[str, object], says: str
) -> None:
    wf = await create(daemon, scheduled("policed", "{cron: '@daily'}"))
    before = (await activate(daemon, wf.id, overlap_policy=pb.OVERLAP_POLICY_BUFFER_ONE)).schedule
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await activate(daemon, wf.id, **fields)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in (info.value.details() or "")
    assert await get_schedule(daemon, wf.id) == before


async def test_unknown_and_malformed_workflow_ids(daemon: Daemon) -> None:
    past = {"start_time": ts(T0 - timedelta(days=2)), "end_time": ts(T0 - timedelta(days=1))}
    for rpc, message, extra in [
        ("ScheduleWorkflow", pb.ScheduleWorkflowRequest, {}),
        ("UnscheduleWorkflow", pb.UnscheduleWorkflowRequest, {}),
        ("GetSchedule", pb.GetScheduleRequest, {}),
        ("BackfillWorkflow", pb.BackfillWorkflowRequest, past),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(daemon.stub, rpc)(message(workflow_id="x" * 5000, **extra))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, rpc
        assert "is not a workflow id (a UUID)" in (info.value.details() or "")
        assert len(info.value.details() or "") < 200
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(daemon.stub, rpc)(
                message(workflow_id="0b0c0d0e-0000-4000-8000-00000000abcd", **extra)
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, rpc
