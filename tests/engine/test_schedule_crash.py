"""Schedules against real time and real processes: a daemon killed with SIGKILL right after a
fire committed does not fire that instant again after its restart, and fires the next one; a
minute cron on a real clock fires and its run sees `$workflow.scheduledAt`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from tests.conftest import Daemon, eventually
from tests.engine.schedule_support import at, runs_of, scheduled
from tests.engine.support import AUDIT_CSV, Plane, finished
from tests.procs import start_dataplane, start_workflowd
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow


async def test_a_kill_right_after_a_fire_neither_refires_nor_stops_the_schedule(
    tmp_path: Path,
) -> None:
    plane_proc, plane_url = await start_dataplane(tmp_path / "plane")
    plane = Plane(plane_url)
    await plane.load_csv("audit", AUDIT_CSV)
    # A two-second schedule, below the default quota of the shortest interval.
    quota = ("--quota-min-every-s", "1")
    daemon, address = await start_workflowd(
        tmp_path / "wf", plane_url, "after_fire_commit", extra=quota
    )
    channel = grpc.aio.insecure_channel(address)
    try:
        stub = pb_grpc.WorkflowServiceStub(channel)
        text = scheduled("every-two", "{every: {seconds: 2}}")
        created = await stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=text))
        wf_id = created.workflow.id
        activated = await stub.ScheduleWorkflow(pb.ScheduleWorkflowRequest(workflow_id=wf_id))
        first = at(activated.schedule.next_fire_at)
        assert await daemon.wait() == -9  # killed itself right after committing the fire
        await channel.close()

        daemon, address = await start_workflowd(tmp_path / "wf", plane_url, extra=quota)
        channel = grpc.aio.insecure_channel(address)
        stub = pb_grpc.WorkflowServiceStub(channel)

        async def later_fire() -> list[pb.FireDecision]:
            sched = (await stub.GetSchedule(pb.GetScheduleRequest(workflow_id=wf_id))).schedule
            made = [d for d in sched.recent_decisions if d.run_id]
            return made if any(at(d.fire_time) > first for d in made) else []

        decisions = await eventually(later_fire, timeout_s=30)
        await stub.UnscheduleWorkflow(pb.UnscheduleWorkflowRequest(workflow_id=wf_id))
        assert [d.outcome for d in decisions if at(d.fire_time) == first] == [pb.FIRE_OUTCOME_FIRED]
        runs = (await stub.ListRuns(pb.ListRunsRequest(workflow_id=wf_id))).runs
        instants = [at(r.scheduled_at) for r in runs]
        assert instants.count(first) == 1
        assert len(set(instants)) == len(instants)
        for run in runs:
            async for _ in stub.WatchRun(pb.WatchRunRequest(run_id=run.id)):
                pass
            jobs = await plane.jobs_for_run(run.id)
            assert len(jobs) == 1
    finally:
        await channel.close()
        await daemon.stop()
        await plane.aclose()
        await plane_proc.stop()


@pytest.mark.clock
async def test_a_minute_cron_fires_on_the_real_clock(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon = await start_daemon()
    plane = Plane.of(daemon)
    await plane.load_csv("audit", AUDIT_CSV)
    await plane.aclose()
    text = scheduled("every-minute", "{cron: '* * * * *'}")
    created = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=text, schedule_immediately=True)
    )
    before = datetime.now(UTC)

    async def fired() -> str:
        sched = (
            await daemon.stub.GetSchedule(pb.GetScheduleRequest(workflow_id=created.workflow.id))
        ).schedule
        return next((d.run_id for d in sched.recent_decisions if d.run_id), "")

    run_id = await eventually(fired, timeout_s=75, interval_s=0.5)
    run = await finished(daemon, run_id)
    assert run.status == pb.RUN_STATUS_COMPLETED, run.error
    instant = at(run.scheduled_at)
    assert instant > before
    assert instant.second == 0
    assert instant.microsecond == 0
    assert run.context["at"] == instant.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(await runs_of(daemon, created.workflow.id)) >= 1
