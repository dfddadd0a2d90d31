"""A schedule's input (issue 18), on a real daemon whose scheduler sleeps on a clock the test
moves: its fires, catch-ups and backfills run with it; a schedule whose input the workflow's
input.schema refuses is never activated, and a version that would refuse the input of the
active schedule is never stored."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from tests.conftest import Daemon
from tests.engine.schedule_support import T0, activate, at, create, decision_at, get_schedule, ts
from tests.engine.support import finished, jv, workflow
from tests.scheduler.manual_clock import ManualClock
from workflowd.v1 import workflow_service_pb2 as pb

MINUTE = timedelta(minutes=1)
NEEDS_DAY = "{type: object, required: [day], properties: {day: {type: string}}}"
NOTE = "  - note: {set: {seen: true}}\n"


def needs_day(name: str, version: str = "1.0.0", schema: str = NEEDS_DAY) -> str:
    extra = (
        f"input:\n  schema:\n    format: json\n    document: {schema}\n"
        "schedule: {cron: '*/5 * * * *'}\n"
    )
    return workflow(name, NOTE, version=version, extra=extra)


def plain(message: Any) -> Any:
    return json_format.MessageToDict(message)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def daemon(start_daemon: Callable[..., Awaitable[Daemon]], clock: ManualClock) -> Daemon:
    return await start_daemon(clock=clock)


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_fires_and_catch_ups_run_with_the_schedules_input(
    daemon: Daemon, clock: ManualClock
) -> None:
    wf = await create(daemon, needs_day("daily-input"))
    given = {"day": "2026-01-05", "tables": ["a", "b"]}
    response = await activate(daemon, wf.id, input=jv(given))
    assert plain(response.schedule.input) == given
    assert plain((await get_schedule(daemon, wf.id)).input) == given
    listed = await daemon.stub.ListSchedules(pb.ListSchedulesRequest())
    assert [plain(s.input) for s in listed.schedules] == [given]

    first = T0.replace(minute=5)
    clock.set(first)
    decision = await decision_at(daemon, wf.id, first)
    assert decision.outcome == pb.FIRE_OUTCOME_FIRED, decision.reason
    run = await finished(daemon, decision.run_id)
    assert run.status == pb.RUN_STATUS_COMPLETED, run.error
    assert plain(run.input) == given

    # Policies change, the input stays; a new input is taken by the next fires.
    changed = await activate(daemon, wf.id, overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL)
    assert plain(changed.schedule.input) == given
    later = {"day": "2026-01-06"}
    await activate(daemon, wf.id, input=jv(later))
    # The daemon was "down" for 20 minutes: the instants are caught up, with the input.
    clock.set(first + 20 * MINUTE)
    caught = await decision_at(daemon, wf.id, first + 20 * MINUTE)
    assert caught.outcome == pb.FIRE_OUTCOME_CAUGHT_UP, caught.reason
    assert plain((await finished(daemon, caught.run_id)).input) == later


async def test_backfills_and_trigger_now_use_the_schedules_input(
    daemon: Daemon, clock: ManualClock
) -> None:
    wf = await create(daemon, needs_day("backfilled"))
    given = {"day": "any"}
    response = await activate(daemon, wf.id, input=jv(given), trigger_immediately=True)
    assert plain((await finished(daemon, response.run_id)).input) == given
    clock.set(T0 + timedelta(hours=1))
    done = await daemon.stub.BackfillWorkflow(
        pb.BackfillWorkflowRequest(
            workflow_id=wf.id, start_time=ts(T0), end_time=ts(T0 + 12 * MINUTE), parallel=True
        )
    )
    assert [at(r.scheduled_at) for r in done.runs] == [
        T0.replace(minute=5),
        T0.replace(minute=10),
    ]
    for run_id in done.run_ids:
        run = await finished(daemon, run_id)
        assert run.trigger == pb.RUN_TRIGGER_BACKFILL
        assert plain(run.input) == given


async def test_a_schedule_whose_input_the_schema_refuses_is_not_activated(
    daemon: Daemon,
) -> None:
    wf = await create(daemon, needs_day("strict"))
    # No input: the runs would get {}, which the schema refuses. Nothing is activated.
    error = await refused(activate(daemon, wf.id))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    said = error.details() or ""
    assert said.startswith(
        "the schedule's runs would get the input {}, which analytics/strict version 1.0.0 refuses"
    ), said
    assert "'day' is a required property" in said
    assert said.endswith(
        "give the schedule an input its input.schema accepts with ScheduleWorkflow"
    )
    error = await refused(get_schedule(daemon, wf.id))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # A given input the schema refuses is the request's problem, with its pointer.
    error = await refused(activate(daemon, wf.id, input=jv({"day": 5})))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(
        "input/day: does not match the workflow's input.schema"
    )
    # Inputs are bounded like a run's: size (and depth, below).
    huge = {"day": "d", "blob": "x" * (1024 * 1024 + 1)}
    error = await refused(activate(daemon, wf.id, input=jv(huge)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("input: cannot be stored:")
    error = await refused(get_schedule(daemon, wf.id))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_a_schedule_input_deeper_than_run_inputs_may_be_is_refused(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon = await start_daemon(clock=ManualClock(T0), max_value_depth=4)
    wf = await create(daemon, needs_day("deep"))
    deep = {"day": "d", "a": {"b": {"c": {"d": {"e": {"f": [1]}}}}}}
    error = await refused(activate(daemon, wf.id, input=jv(deep)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("input: cannot be stored:"), error.details()
    error = await refused(get_schedule(daemon, wf.id))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_create_with_schedule_immediately_checks_the_schedules_input(
    daemon: Daemon,
) -> None:
    error = await refused(create(daemon, needs_day("applied"), schedule_immediately=True))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'day' is a required property" in (error.details() or "")
    workflows = await daemon.stub.ListWorkflows(pb.ListWorkflowsRequest())
    assert list(workflows.workflows) == []  # refused before anything was stored

    error = await refused(
        create(
            daemon,
            needs_day("applied"),
            schedule_immediately=True,
            schedule_input=jv({"day": []}),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("schedule_input/day: does not match")

    wf = await create(
        daemon, needs_day("applied"), schedule_immediately=True, schedule_input=jv({"day": "d"})
    )
    schedule = await get_schedule(daemon, wf.id)
    assert schedule.active
    assert plain(schedule.input) == {"day": "d"}


async def test_a_version_whose_schema_refuses_the_active_schedules_input_is_refused(
    daemon: Daemon,
) -> None:
    wf = await create(daemon, needs_day("evolving"))
    await activate(daemon, wf.id, input=jv({"day": "d"}))
    stricter = "{type: object, required: [day, region], properties: {day: {type: string}}}"
    error = await refused(create(daemon, needs_day("evolving", "2.0.0", stricter)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    said = error.details() or ""
    assert said.startswith(
        'version 2.0.0 of analytics/evolving would refuse the input of its active schedule, {"day":"d"}'
    ), said
    assert "'region' is a required property" in said
    got = await daemon.stub.GetWorkflow(pb.GetWorkflowRequest(workflow_id=wf.id))
    assert list(got.workflow.versions) == ["1.0.0"]
    # A version that accepts it is stored, and the schedule follows it with its input.
    looser = "{type: object, properties: {day: {type: string}}}"
    await create(daemon, needs_day("evolving", "3.0.0", looser))
    schedule = await get_schedule(daemon, wf.id)
    assert schedule.version == "3.0.0"
    assert json.dumps(plain(schedule.input)) == '{"day": "d"}'
    # Stopped, the schedule constrains no version.
    await daemon.stub.UnscheduleWorkflow(pb.UnscheduleWorkflowRequest(workflow_id=wf.id))
    await create(daemon, needs_day("evolving", "4.0.0", stricter))
