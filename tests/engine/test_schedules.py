"""Schedules on a real daemon (gRPC, SQLite, the local data plane) whose scheduler sleeps on a
clock the test moves: activation, firing, overlap policies, the version change, stopping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import grpc
import pytest

from tests.conftest import Daemon, eventually
from tests.engine.schedule_support import (
    T0,
    activate,
    at,
    create,
    decision_at,
    get_schedule,
    runs_of,
    scheduled,
    slow,
)
from tests.engine.support import AUDIT_CSV, Plane, events_until_end, finished
from tests.scheduler.manual_clock import ManualClock
from workflowd.engine.schedules import ScheduleLimits, Schedules
from workflowd.scheduler.loop import SchedulerLoop
from workflowd.v1 import workflow_service_pb2 as pb

MINUTE = timedelta(minutes=1)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def daemon(start_daemon: Callable[..., Awaitable[Daemon]], clock: ManualClock) -> Daemon:
    return await start_daemon(clock=clock)


@pytest.fixture
async def plane(daemon: Daemon) -> AsyncIterator[Plane]:
    plane = Plane.of(daemon)
    await plane.load_csv("audit", AUDIT_CSV)
    yield plane
    await plane.aclose()


async def cancel_all(daemon: Daemon, workflow_id: str) -> None:
    for run in await runs_of(daemon, workflow_id):
        await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=run.id))
    for run in await runs_of(daemon, workflow_id):
        await events_until_end(daemon, run.id)


async def test_a_cron_fires_at_its_instant_and_the_run_sees_it(
    daemon: Daemon, plane: Plane, clock: ManualClock
) -> None:
    wf = await create(daemon, scheduled("five", "{cron: '*/5 * * * *'}"))
    response = await activate(daemon, wf.id)
    sched = response.schedule
    assert sched.active
    assert sched.cron == "*/5 * * * *"
    assert sched.timezone == "UTC"
    assert sched.overlap_policy == pb.OVERLAP_POLICY_SKIP
    assert sched.catchup_policy == pb.CATCHUP_POLICY_LATEST
    assert sched.catchup_window.seconds == 3600
    first = T0.replace(minute=5)
    assert [at(t) for t in sched.next_fire_times] == [first + k * 5 * MINUTE for k in range(10)]
    assert await runs_of(daemon, wf.id) == []

    clock.set(first)
    decision = await decision_at(daemon, wf.id, first)
    assert decision.outcome == pb.FIRE_OUTCOME_FIRED
    run = await finished(daemon, decision.run_id)
    assert run.status == pb.RUN_STATUS_COMPLETED, run.error
    assert run.trigger == pb.RUN_TRIGGER_SCHEDULE
    assert at(run.scheduled_at) == first
    assert run.context["at"] == "2026-01-05T12:05:00Z"
    notes = [row["note"] for row in await plane.rows("audit")]
    assert "2026-01-05T12:05:00Z" in notes
    assert at((await get_schedule(daemon, wf.id)).next_fire_at) == first + 5 * MINUTE


async def start_active_run(
    daemon: Daemon, clock: ManualClock, name: str, **policies: object
) -> tuple[pb.Workflow, pb.Run]:
    """A schedule every 5 minutes whose first run is still running (a long query)."""
    wf = await create(daemon, slow(name, "{cron: '*/5 * * * *'}"))
    await activate(daemon, wf.id, **policies)
    clock.set(T0.replace(minute=5))
    first = await decision_at(daemon, wf.id, T0.replace(minute=5))
    assert first.outcome == pb.FIRE_OUTCOME_FIRED
    run = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=first.run_id))).run
    return wf, run


async def test_skip_records_why_no_run_was_created(daemon: Daemon, clock: ManualClock) -> None:
    wf, active = await start_active_run(daemon, clock, "skipper")
    clock.set(T0.replace(minute=10))
    decision = await decision_at(daemon, wf.id, T0.replace(minute=10))
    assert decision.outcome == pb.FIRE_OUTCOME_SKIPPED
    assert decision.run_id == ""
    assert decision.reason == f"run {active.id} is still active (SKIP)"
    assert [r.id for r in await runs_of(daemon, wf.id)] == [active.id]
    await cancel_all(daemon, wf.id)


async def test_buffer_one_keeps_one_run_waiting_that_starts_when_the_active_one_ends(
    daemon: Daemon, clock: ManualClock
) -> None:
    wf, active = await start_active_run(
        daemon, clock, "buffer", overlap_policy=pb.OVERLAP_POLICY_BUFFER_ONE
    )
    clock.set(T0.replace(minute=10))
    buffered = await decision_at(daemon, wf.id, T0.replace(minute=10))
    assert buffered.outcome == pb.FIRE_OUTCOME_BUFFERED
    waiting = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=buffered.run_id))).run
    assert waiting.after_run_id == active.id
    assert waiting.status == pb.RUN_STATUS_PENDING
    clock.set(T0.replace(minute=15))
    third = await decision_at(daemon, wf.id, T0.replace(minute=15))
    assert third.outcome == pb.FIRE_OUTCOME_SKIPPED
    assert f"run {waiting.id} already waits its turn" in third.reason

    await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=active.id))
    await events_until_end(daemon, active.id)

    async def started() -> bool:
        run = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=waiting.id))).run
        return run.status == pb.RUN_STATUS_RUNNING

    await eventually(started)
    await cancel_all(daemon, wf.id)


async def test_allow_all_lets_runs_overlap(daemon: Daemon, clock: ManualClock) -> None:
    wf, _active = await start_active_run(
        daemon, clock, "overlap", overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL
    )
    clock.set(T0.replace(minute=10))
    second = await decision_at(daemon, wf.id, T0.replace(minute=10))
    assert second.outcome == pb.FIRE_OUTCOME_FIRED
    assert "ALLOW_ALL" in second.reason

    async def both_running() -> bool:
        runs = await runs_of(daemon, wf.id)
        return [r.status for r in runs] == [pb.RUN_STATUS_RUNNING] * 2

    await eventually(both_running)
    await cancel_all(daemon, wf.id)


async def test_cancel_other_cancels_the_active_run_then_starts(
    daemon: Daemon, clock: ManualClock
) -> None:
    wf, active = await start_active_run(
        daemon, clock, "canceller", overlap_policy=pb.OVERLAP_POLICY_CANCEL_OTHER
    )
    clock.set(T0.replace(minute=10))
    decision = await decision_at(daemon, wf.id, T0.replace(minute=10))
    assert decision.outcome == pb.FIRE_OUTCOME_CANCELLED_PREVIOUS
    assert decision.reason == f"cancelled {active.id}; this run starts once they have stopped"
    ended = await events_until_end(daemon, active.id)
    assert ended[-1].type == pb.RUN_EVENT_TYPE_RUN_CANCELLED

    async def replacement_running() -> bool:
        run = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=decision.run_id))).run
        return run.status == pb.RUN_STATUS_RUNNING

    await eventually(replacement_running)
    await cancel_all(daemon, wf.id)


async def test_a_new_version_moves_the_schedule_with_nothing_lost_or_doubled(
    daemon: Daemon, plane: Plane, clock: ManualClock
) -> None:
    wf = await create(daemon, scheduled("mover", "{cron: '*/5 * * * *'}"))
    await activate(daemon, wf.id)
    clock.set(T0.replace(minute=5))
    await finished(daemon, (await decision_at(daemon, wf.id, T0.replace(minute=5))).run_id)
    # 12:07: the new version fires at minutes 3, 13, 23 …; 12:10 (old) must not fire.
    clock.set(T0.replace(minute=7))
    await create(daemon, scheduled("mover", "{cron: '3-59/10 * * * *'}", version="2.0.0"))
    sched = await get_schedule(daemon, wf.id)
    assert sched.version == "2.0.0"
    assert sched.cron == "3-59/10 * * * *"
    assert at(sched.next_fire_at) == T0.replace(minute=13)
    clock.set(T0.replace(minute=13))
    await decision_at(daemon, wf.id, T0.replace(minute=13))
    fired = [at(r.scheduled_at) for r in await runs_of(daemon, wf.id)]
    assert fired == [T0.replace(minute=5), T0.replace(minute=13)]
    newest = (await runs_of(daemon, wf.id))[-1]
    assert newest.version == "2.0.0"


async def test_a_version_without_a_schedule_stops_it_and_says_so(
    daemon: Daemon, clock: ManualClock
) -> None:
    wf = await create(daemon, scheduled("stopper", "{cron: '*/5 * * * *'}"))
    await activate(daemon, wf.id)
    unscheduled = scheduled("stopper", "{cron: '@daily'}", version="2.0.0").replace(
        "schedule: {cron: '@daily'}\n", ""
    )
    clock.set(T0.replace(minute=2))
    await create(daemon, unscheduled)
    sched = await get_schedule(daemon, wf.id)
    assert not sched.active
    assert list(sched.next_fire_times) == []
    assert sched.recent_decisions[0].outcome == pb.FIRE_OUTCOME_STOPPED
    assert sched.recent_decisions[0].reason == "version 2.0.0 has no schedule block"
    assert daemon.app.scheduler is not None
    assert daemon.app.scheduler.scheduled == 0
    clock.set(T0.replace(minute=30))
    assert await runs_of(daemon, wf.id) == []


@pytest.mark.parametrize("how", ["unschedule", "archive"])
async def test_unschedule_and_archive_stop_the_fires(
    daemon: Daemon, clock: ManualClock, how: str
) -> None:
    wf = await create(daemon, scheduled(f"stop-{how}", "{cron: '*/5 * * * *'}"))
    await activate(daemon, wf.id)
    if how == "unschedule":
        response = await daemon.stub.UnscheduleWorkflow(
            pb.UnscheduleWorkflowRequest(workflow_id=wf.id)
        )
        assert not response.schedule.active
    else:
        await daemon.stub.ArchiveWorkflow(pb.ArchiveWorkflowRequest(id=wf.id))
    sched = await get_schedule(daemon, wf.id)
    assert not sched.active
    assert sched.recent_decisions[0].outcome == pb.FIRE_OUTCOME_STOPPED
    assert daemon.app.scheduler is not None
    assert daemon.app.scheduler.scheduled == 0
    clock.set(T0 + timedelta(hours=2))
    assert await runs_of(daemon, wf.id) == []


async def test_schedule_immediately_activates_on_create_and_trigger_now_runs(
    daemon: Daemon, plane: Plane, clock: ManualClock
) -> None:
    wf = await create(
        daemon, scheduled("eager", "{every: {minutes: 10}}"), schedule_immediately=True
    )
    sched = await get_schedule(daemon, wf.id)
    assert sched.active
    assert sched.every.seconds == 600
    assert at(sched.anchor) == T0
    assert at(sched.next_fire_at) == T0 + 10 * MINUTE
    response = await activate(daemon, wf.id, trigger_immediately=True)
    assert response.run_id
    run = await finished(daemon, response.run_id)
    assert run.status == pb.RUN_STATUS_COMPLETED, run.error
    assert at(run.scheduled_at) == T0
    # Activating again updates policies and keeps the phase.
    again = await activate(daemon, wf.id, overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL)
    assert again.schedule.overlap_policy == pb.OVERLAP_POLICY_ALLOW_ALL
    assert at(again.schedule.anchor) == T0


async def test_listing_schedules_pages_and_filters_by_namespace(daemon: Daemon) -> None:
    ids = []
    for i in range(3):
        wf = await create(daemon, scheduled(f"listed-{i}", "{cron: '@hourly'}"))
        await activate(daemon, wf.id)
        ids.append(wf.id)
    page = await daemon.stub.ListSchedules(pb.ListSchedulesRequest(page_size=2))
    assert [s.workflow_id for s in page.schedules] == [ids[2], ids[1]]
    rest = await daemon.stub.ListSchedules(
        pb.ListSchedulesRequest(page_size=2, page_token=page.next_page_token)
    )
    assert [s.workflow_id for s in rest.schedules] == [ids[0]]
    assert rest.next_page_token == ""
    other = await daemon.stub.ListSchedules(pb.ListSchedulesRequest(namespace="elsewhere"))
    assert list(other.schedules) == []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.ListSchedules(pb.ListSchedulesRequest(namespace="no/slash"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_two_schedulers_sharing_one_store_fire_each_instant_once(
    daemon: Daemon, plane: Plane, clock: ManualClock
) -> None:
    wf = await create(daemon, scheduled("shared", "{cron: '*/5 * * * *'}"))
    await activate(daemon, wf.id)
    app = daemon.app
    assert app.deps is not None
    assert app.definitions is not None
    assert app.runs is not None
    other = Schedules(app.deps, app.store, app.definitions, app.runs, ScheduleLimits())
    second = SchedulerLoop(other, clock)
    other.attach(second)
    await second.start()
    try:
        instants = [T0.replace(minute=m) for m in (5, 10, 15)]
        for instant in instants:
            clock.set(instant)
            decision = await decision_at(daemon, wf.id, instant)
            assert decision.outcome == pb.FIRE_OUTCOME_FIRED
            await finished(daemon, decision.run_id)
        runs = await runs_of(daemon, wf.id)
        assert [at(r.scheduled_at) for r in runs] == instants
        fired = app.metrics.registry.get_sample_value(
            "workflowd_schedule_fires_total", {"outcome": "fired"}
        )
        assert fired == len(instants)
    finally:
        await second.aclose()
