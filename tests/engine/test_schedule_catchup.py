"""Catch-up after downtime: the daemon stops, its clock moves on three hours, and a new daemon
on the same data directory decides what the missed instants become, by the catch-up policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from tests.conftest import Daemon, eventually
from tests.engine.schedule_support import T0, activate, at, create, get_schedule, runs_of, scheduled
from tests.engine.support import AUDIT_CSV, Plane, finished
from tests.scheduler.manual_clock import ManualClock
from workflowd.v1 import workflow_service_pb2 as pb

DOWN = timedelta(hours=3)
WINDOW_START = T0 + DOWN - timedelta(hours=1)  # 14:01
IN_WINDOW = [WINDOW_START + timedelta(minutes=4 + 5 * k) for k in range(12)]  # 14:05 … 15:00


async def down_and_up(
    start_daemon: Callable[..., Awaitable[Daemon]], **policies: object
) -> tuple[Daemon, str]:
    """Activate a 5-minute schedule at 12:01, stop, and come back at 15:01."""
    first = await start_daemon(clock=ManualClock(T0))
    plane = Plane(first.jobs_url)
    await plane.load_csv("audit", AUDIT_CSV)
    await plane.aclose()
    wf = await create(first, scheduled("catcher", "{cron: '*/5 * * * *'}"))
    await activate(first, wf.id, **policies)
    await first.app.drain()
    daemon = await start_daemon(first.data_dir, clock=ManualClock(T0 + DOWN))
    await settled(daemon, wf.id)
    return daemon, wf.id


async def settled(daemon: Daemon, workflow_id: str) -> None:
    """The catch-up is done once the schedule points past the downtime (its last write)."""

    async def caught_up() -> bool:
        sched = await get_schedule(daemon, workflow_id)
        return at(sched.next_fire_at) == T0.replace(hour=15, minute=5)

    await eventually(caught_up)


def by_instant(schedule: pb.Schedule) -> dict[object, pb.FireDecision]:
    return {at(d.fire_time): d for d in schedule.recent_decisions}


async def test_latest_fires_the_most_recent_missed_instant_and_records_the_rest(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon, workflow_id = await down_and_up(start_daemon)
    sched = await get_schedule(daemon, workflow_id)
    decisions = by_instant(sched)
    missed = decisions[T0.replace(minute=5)]
    assert missed.outcome == pb.FIRE_OUTCOME_MISSED
    assert "outside the catch-up window (1h)" in missed.reason
    caught = decisions[IN_WINDOW[-1]]
    assert caught.outcome == pb.FIRE_OUTCOME_CAUGHT_UP
    assert set(decisions) == {T0.replace(minute=5), IN_WINDOW[-1]}
    run = await finished(daemon, caught.run_id)
    assert run.status == pb.RUN_STATUS_COMPLETED, run.error
    assert [at(r.scheduled_at) for r in await runs_of(daemon, workflow_id)] == [IN_WINDOW[-1]]
    assert at(sched.next_fire_at) == T0.replace(hour=15, minute=5)


async def test_all_fires_every_instant_in_the_window_in_order(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon, workflow_id = await down_and_up(
        start_daemon,
        catchup_policy=pb.CATCHUP_POLICY_ALL,
        overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL,
    )
    decisions = by_instant(await get_schedule(daemon, workflow_id))
    assert decisions[T0.replace(minute=5)].outcome == pb.FIRE_OUTCOME_MISSED
    for instant in IN_WINDOW:
        assert decisions[instant].outcome == pb.FIRE_OUTCOME_CAUGHT_UP
    runs = await runs_of(daemon, workflow_id)
    assert [at(r.scheduled_at) for r in runs] == IN_WINDOW
    for run in runs:
        assert (await finished(daemon, run.id)).status == pb.RUN_STATUS_COMPLETED


async def test_none_fires_nothing_and_says_so(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon, workflow_id = await down_and_up(start_daemon, catchup_policy=pb.CATCHUP_POLICY_NONE)
    sched = await get_schedule(daemon, workflow_id)
    [only] = sched.recent_decisions
    assert only.outcome == pb.FIRE_OUTCOME_MISSED
    assert at(only.fire_time) == T0.replace(minute=5)
    assert "the catch-up policy is NONE" in only.reason
    assert await runs_of(daemon, workflow_id) == []
    assert at(sched.next_fire_at) == T0.replace(hour=15, minute=5)


@pytest.mark.parametrize("window_s", [0, 600])
async def test_the_window_decides_what_is_missed(
    start_daemon: Callable[..., Awaitable[Daemon]], window_s: int
) -> None:
    from google.protobuf import duration_pb2

    daemon, workflow_id = await down_and_up(
        start_daemon, catchup_window=duration_pb2.Duration(seconds=window_s)
    )
    decisions = by_instant(await get_schedule(daemon, workflow_id))
    fired = [d for d in decisions.values() if d.outcome == pb.FIRE_OUTCOME_CAUGHT_UP]
    if window_s == 0:
        assert fired == []
    else:
        assert [at(d.fire_time) for d in fired] == [IN_WINDOW[-1]]
    assert decisions[T0.replace(minute=5)].outcome == pb.FIRE_OUTCOME_MISSED
