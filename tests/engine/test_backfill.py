"""BackfillWorkflow: a run for every instant of a past range, in order, one at a time unless
asked otherwise, idempotent, capped."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import grpc
import pytest

from tests.conftest import Daemon
from tests.engine.schedule_support import T0, at, create, runs_of, scheduled, ts
from tests.engine.support import AUDIT_CSV, Plane, events_until_end
from tests.scheduler.manual_clock import ManualClock
from workflowd.v1 import workflow_service_pb2 as pb

NOW = T0 + timedelta(days=2)
DAY = [T0.replace(hour=h, minute=0) for h in range(13, 19)]  # 13:00 … 18:00


@pytest.fixture
async def daemon(start_daemon: Callable[..., Awaitable[Daemon]]) -> AsyncIterator[Daemon]:
    daemon = await start_daemon(clock=ManualClock(NOW), max_backfill_runs=10)
    plane = Plane.of(daemon)
    await plane.load_csv("audit", AUDIT_CSV)
    await plane.aclose()
    return daemon


async def backfill(
    daemon: Daemon, workflow_id: str, **fields: object
) -> pb.BackfillWorkflowResponse:
    request = pb.BackfillWorkflowRequest(
        workflow_id=workflow_id,
        start_time=ts(DAY[0]),
        end_time=ts(DAY[-1] + timedelta(minutes=1)),
    )
    for name, value in fields.items():
        if name in ("start_time", "end_time"):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    return await daemon.stub.BackfillWorkflow(request)


async def test_backfill_runs_each_instant_in_order_one_after_another(daemon: Daemon) -> None:
    wf = await create(daemon, scheduled("hourly", "{cron: '@hourly'}"))
    response = await backfill(daemon, wf.id)
    assert response.created == len(DAY)
    runs = [(await daemon.stub.GetRun(pb.GetRunRequest(run_id=i))).run for i in response.run_ids]
    assert [at(r.scheduled_at) for r in runs] == DAY
    assert all(r.trigger == pb.RUN_TRIGGER_BACKFILL for r in runs)
    assert [r.after_run_id for r in runs] == ["", *response.run_ids[:-1]]
    ends = []
    for run in runs:
        events = await events_until_end(daemon, run.id)
        assert events[-1].type == pb.RUN_EVENT_TYPE_RUN_COMPLETED
        starts = [e for e in events if e.type == pb.RUN_EVENT_TYPE_RUN_STARTED]
        ends.append((starts[0].global_seq, events[-1].global_seq))
    # Each run started only after the previous one's terminal event.
    for (_, previous_end), (next_start, _) in itertools.pairwise(ends):
        assert next_start > previous_end


async def test_backfilling_the_same_range_twice_creates_nothing_new(daemon: Daemon) -> None:
    wf = await create(daemon, scheduled("again", "{cron: '@hourly'}"))
    first = await backfill(daemon, wf.id)
    second = await backfill(daemon, wf.id)
    assert second.created == 0
    assert list(second.run_ids) == list(first.run_ids)
    assert len(await runs_of(daemon, wf.id)) == len(DAY)
    for run_id in first.run_ids:
        await events_until_end(daemon, run_id)


async def test_parallel_backfill_starts_every_run_at_once(daemon: Daemon) -> None:
    wf = await create(daemon, scheduled("wide", "{cron: '@hourly'}"))
    response = await backfill(daemon, wf.id, parallel=True)
    runs = await runs_of(daemon, wf.id)
    assert [r.after_run_id for r in runs] == [""] * len(DAY)
    for run_id in response.run_ids:
        assert (await events_until_end(daemon, run_id))[-1].type == pb.RUN_EVENT_TYPE_RUN_COMPLETED


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"end_time": ts(T0 + timedelta(days=1))}, "the range holds more than 10 instants"),
        ({"start_time": ts(DAY[3]), "end_time": ts(DAY[1])}, "end_time: must be after start_time"),
        ({"end_time": ts(NOW + timedelta(hours=1))}, "end_time: is in the future"),
    ],
)
async def test_bad_ranges_are_invalid_and_create_nothing(
    daemon: Daemon, fields: dict[str, object], says: str
) -> None:
    wf = await create(daemon, scheduled("ranges", "{cron: '@hourly'}"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await backfill(daemon, wf.id, **fields)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in (info.value.details() or "")
    assert await runs_of(daemon, wf.id) == []
