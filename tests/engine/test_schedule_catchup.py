"""Catch-up after downtime: the daemon stops, its clock moves on three hours, and a new daemon
on the same data directory decides what the missed instants become, by the catch-up policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import duration_pb2

from tests.conftest import Daemon, eventually
from tests.engine.schedule_support import (
    T0,
    activate,
    at,
    create,
    get_schedule,
    runs_of,
    scheduled,
    stored_decisions,
)
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
    first = await start_daemon(clock=ManualClock(T0), quota_min_every_s=0)
    plane = Plane.of(first)
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


async def test_an_outage_shorter_than_a_minute_fires_every_instant_it_hid(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    """Issue 18: `every: 15s`, catch-up ALL, down from 23:05:21 to 23:06:10. The instant due at
    the restart (23:05:33) is on time, and so are the two that came while it waited."""
    activated = datetime(2026, 1, 5, 23, 5, 18, tzinfo=UTC)
    first = await start_daemon(clock=ManualClock(activated), quota_min_every_s=0)
    plane = Plane.of(first)
    await plane.load_csv("audit", AUDIT_CSV)
    await plane.aclose()
    wf = await create(first, scheduled("quarter", "{every: {seconds: 15}}"))
    await activate(
        first,
        wf.id,
        catchup_policy=pb.CATCHUP_POLICY_ALL,
        overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL,
    )
    await first.app.drain()
    back = activated.replace(minute=6, second=10)
    daemon = await start_daemon(first.data_dir, clock=ManualClock(back), quota_min_every_s=0)
    expected = [activated.replace(second=33), activated.replace(second=48), back.replace(second=3)]

    async def settled() -> bool:
        return at((await get_schedule(daemon, wf.id)).next_fire_at) > back

    await eventually(settled)
    sched = await get_schedule(daemon, wf.id)
    assert at(sched.next_fire_at) == back.replace(second=18)
    decided = stored_decisions(daemon.data_dir, wf.id)
    assert [(i, o) for i, o, _ in decided] == [(t, "fired") for t in expected]
    runs = await runs_of(daemon, wf.id)
    assert [at(r.scheduled_at) for r in runs] == expected


async def test_a_long_outage_fires_at_most_max_catchup_runs_and_records_the_rest(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    """Issue 16, item 13: every second, catch-up ALL within 4 h, down for 3 h: 10,800 instants.
    The latest 100 (max_catchup_runs) fire; the other 10,700 are one MISSED record that says
    how many and from when to when, and none vanishes."""
    first = await start_daemon(clock=ManualClock(T0), quota_min_every_s=0)
    plane = Plane.of(first)
    await plane.load_csv("audit", AUDIT_CSV)
    await plane.aclose()
    wf = await create(first, scheduled("second", "{every: {seconds: 1}}"))
    await activate(
        first,
        wf.id,
        catchup_policy=pb.CATCHUP_POLICY_ALL,
        overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL,
        catchup_window=duration_pb2.Duration(seconds=4 * 3600),
    )
    await first.app.drain()
    back = T0 + DOWN
    daemon = await start_daemon(first.data_dir, clock=ManualClock(back), quota_min_every_s=0)

    async def settled() -> bool:
        return at((await get_schedule(daemon, wf.id)).next_fire_at) > back

    await eventually(settled, timeout_s=60)
    second = timedelta(seconds=1)
    fired = [back - k * second for k in range(99, -1, -1)]
    decided = stored_decisions(daemon.data_dir, wf.id)
    assert [(i, o) for i, o, _ in decided] == [(T0 + second, "missed")] + [
        (t, "caught_up") for t in fired
    ]
    reason = decided[0][2]
    last_missed = fired[0] - second
    assert (
        f"10,700 instants not fired from {(T0 + second).isoformat()} to "
        f"{last_missed.isoformat()}" in reason
    ), reason
    assert "beyond the 100 most recent" in reason
    assert [at(r.scheduled_at) for r in await runs_of(daemon, wf.id)] == fired
    assert at((await get_schedule(daemon, wf.id)).next_fire_at) == back + second
