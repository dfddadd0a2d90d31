"""The scheduler's heap holds about one entry per schedule, however often callers create the same
workflow again, activate it again, or stop and restart it (issue 16, item 15: each call used to
push an entry that stayed until a yearly cron's far instant)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from tests.conftest import Daemon
from tests.engine.schedule_support import T0, activate, at, create, get_schedule, scheduled
from tests.scheduler.manual_clock import ManualClock
from workflowd.v1 import workflow_service_pb2 as pb

CREATES = 1000
CYCLES = 200


async def test_the_heap_stays_bounded_by_the_schedules(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon = await start_daemon(clock=ManualClock(T0))
    loop = daemon.app.scheduler
    assert loop is not None
    yearly = scheduled("yearly", "{cron: '@yearly'}")
    wf = await create(daemon, yearly)
    other = await create(daemon, scheduled("daily", "{cron: '@daily'}"))
    await activate(daemon, other.id)
    await activate(daemon, wf.id)
    for _ in range(CREATES):
        await create(daemon, yearly)  # idempotent: the same spec again
        await activate(daemon, wf.id, overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL)
    for _ in range(CYCLES):
        await daemon.stub.UnscheduleWorkflow(pb.UnscheduleWorkflowRequest(workflow_id=wf.id))
        await activate(daemon, wf.id)
    assert loop.scheduled == 2
    assert loop.heap_size <= 2 * loop.scheduled + 1
    # Still one schedule that fires at its instant.
    sched = await get_schedule(daemon, wf.id)
    assert at(sched.next_fire_at) == datetime(2027, 1, 1, tzinfo=UTC)
