"""The schedules page shows each decision (fired, skipped) with its reason and run, on a daemon
whose scheduler sleeps on a clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.conftest import Daemon
from tests.engine.schedule_support import T0, activate, create, decision_at, slow
from tests.engine.test_schedule_catchup import down_and_up
from tests.engine.test_schedules import cancel_all
from tests.scheduler.manual_clock import ManualClock
from tests.web.support import Visitor, text_of
from workflowd.v1 import workflow_service_pb2 as pb


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def daemon(start_daemon: Callable[..., Awaitable[Daemon]], clock: ManualClock) -> Daemon:
    return await start_daemon(clock=clock)


@pytest.fixture
async def visitor(daemon: Daemon) -> AsyncIterator[Visitor]:
    seen = Visitor(daemon)
    yield seen
    await seen.aclose()


async def test_decisions_are_shown_with_their_reasons(
    daemon: Daemon, clock: ManualClock, visitor: Visitor
) -> None:
    wf = await create(daemon, slow("busy", "{cron: '*/5 * * * *'}"))
    await activate(daemon, wf.id)
    clock.set(T0.replace(minute=5))
    fired = await decision_at(daemon, wf.id, T0.replace(minute=5))
    assert fired.outcome == pb.FIRE_OUTCOME_FIRED
    clock.set(T0.replace(minute=10))
    skipped = await decision_at(daemon, wf.id, T0.replace(minute=10))
    assert skipped.outcome == pb.FIRE_OUTCOME_SKIPPED
    for path in ("/schedules", f"/workflows/{wf.id}"):
        status, page = await visitor.get(path)
        assert status == 200
        shown = text_of(page)
        assert "2026-01-05 12:05:00 UTC fired no earlier scheduled run is active" in shown
        assert f"2026-01-05 12:10:00 UTC skipped {skipped.reason}" in shown
        assert f'href="/runs/{fired.run_id}"' in page
        assert "12:15:00" in shown  # the next fire
    await cancel_all(daemon, wf.id)


async def test_a_buffered_fire_is_shown_with_the_run_it_waits_behind(
    daemon: Daemon, clock: ManualClock, visitor: Visitor
) -> None:
    wf = await create(daemon, slow("queued", "{cron: '*/5 * * * *'}"))
    await activate(daemon, wf.id, overlap_policy=pb.OVERLAP_POLICY_BUFFER_ONE)
    clock.set(T0.replace(minute=5))
    fired = await decision_at(daemon, wf.id, T0.replace(minute=5))
    clock.set(T0.replace(minute=10))
    buffered = await decision_at(daemon, wf.id, T0.replace(minute=10))
    assert buffered.outcome == pb.FIRE_OUTCOME_BUFFERED
    status, page = await visitor.get(f"/workflows/{wf.id}")
    assert status == 200
    assert f"2026-01-05 12:10:00 UTC buffered {buffered.reason}" in text_of(page)
    assert f'href="/runs/{buffered.run_id}"' in page
    assert f'href="/runs/{fired.run_id}"' in page
    await cancel_all(daemon, wf.id)


async def test_instants_missed_while_down_are_shown_as_missed(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon, workflow_id = await down_and_up(start_daemon)
    seen = Visitor(daemon)
    try:
        status, page = await seen.get("/schedules")
    finally:
        await seen.aclose()
    assert status == 200
    shown = text_of(page)
    assert "2026-01-05 12:05:00 UTC missed" in shown
    assert "outside the catch-up window (1h)" in shown
    assert "caught_up" in shown  # the latest instant in the window fired late
    assert workflow_id in page  # the schedule's workflow is named with a link
