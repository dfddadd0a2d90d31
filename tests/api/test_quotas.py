"""Per-company quotas on a real daemon over gRPC (issue 16, items 6 and 10), on SQLite and
PostgreSQL where the store counts (`store_url`): each refusal is
RESOURCE_EXHAUSTED with one sentence naming the quota, its value and its setting, and a
`google.rpc.QuotaFailure` detail naming the setting; another company is unaffected; a
scheduled fire refused by a quota is recorded as a skipped decision saying why."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.api.test_tenancy import ACME, GLOBEX, TOKENS, tokens_file
from tests.conftest import Daemon
from tests.engine.schedule_support import SLOW_TASK, T0, at, decision_at, scheduled, ts
from tests.engine.support import jv, workflow
from tests.postgres import store_url
from tests.scheduler.manual_clock import ManualClock
from workflowd.v1 import workflow_service_pb2 as pb

# No jobs system answers at this address: a run's first task stays RUNNING (its submission
# retried for a minute), so runs stay active for as long as a test needs.
NOWHERE = {"jobs_url": "http://127.0.0.1:9", "jobs_retry_deadline_s": 60.0}
TASK = (
    "  - one:\n"
    "      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: SELECT 1 AS one, datasetName: one}\n"
)
MIB = 1024 * 1024
Start = Callable[..., Awaitable[Daemon]]
# `store_url` (each store-counted quota runs on both stores) comes first in a test's arguments:
# its schema is dropped after the daemon has drained, not before.
__all__ = ["store_url"]
Metadata = tuple[tuple[str, str], ...]


def refusal(info: pytest.ExceptionInfo[grpc.aio.AioRpcError], setting: str) -> str:
    """The refusal's message, once its code and QuotaFailure detail are checked."""
    error = info.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    status = rpc_status.from_call(error)
    assert status is not None
    failures = []
    for detail in status.details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            failures += [v.subject for v in failure.violations]
    assert failures == [setting]
    message = error.details() or ""
    assert setting in message, message
    assert message.count(". ") == 0, message  # one sentence
    assert "\n" not in message, message
    return message


async def companies(start_daemon: Start, tmp_path: Path, **settings: object) -> Daemon:
    return await start_daemon(
        tokens_file=str(tokens_file(tmp_path / "tokens.toml", TOKENS)), **settings
    )


async def created(daemon: Daemon, text: str, who: Metadata = ()) -> str:
    reply = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=text), metadata=who
    )
    return str(reply.workflow.id)


async def trigger(daemon: Daemon, workflow_id: str, who: Metadata = (), **fields: object) -> str:
    reply = await daemon.stub.TriggerWorkflow(
        pb.TriggerWorkflowRequest(workflow_id=workflow_id, **fields), metadata=who
    )
    return str(reply.run.id)


async def test_active_runs(store_url: str, start_daemon: Start, tmp_path: Path) -> None:
    daemon = await companies(start_daemon, tmp_path, store=store_url, quota_active_runs=2)
    acme = await created(daemon, workflow("busy", SLOW_TASK), ACME)
    await trigger(daemon, acme, ACME)
    await trigger(daemon, acme, ACME)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await trigger(daemon, acme, ACME)
    message = refusal(info, "quota_active_runs")
    assert "the company has 2 active runs" in message
    assert "quota of 2 active runs" in message
    # A backfill counts every run it would create.
    globex = await created(daemon, scheduled("hourly", "{cron: '@hourly'}", SLOW_TASK), GLOBEX)
    now = datetime.now(UTC)
    request = pb.BackfillWorkflowRequest(
        workflow_id=globex, start_time=ts(now - timedelta(hours=5)), end_time=ts(now)
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.BackfillWorkflow(request, metadata=GLOBEX)
    assert "5 more would pass its quota of 2" in refusal(info, "quota_active_runs")
    await trigger(daemon, globex, GLOBEX)  # another company's runs are its own
    # Ending runs frees their places.
    runs = await daemon.stub.ListRuns(pb.ListRunsRequest(workflow_id=acme), metadata=ACME)
    await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=runs.runs[0].id), metadata=ACME)
    await ended(daemon, runs.runs[0].id, ACME)
    await trigger(daemon, acme, ACME)


async def ended(daemon: Daemon, run_id: str, who: Metadata) -> None:
    async for _ in daemon.stub.WatchRun(pb.WatchRunRequest(run_id=run_id), metadata=who):
        pass


async def test_active_schedules(store_url: str, start_daemon: Start) -> None:
    daemon = await start_daemon(store=store_url, quota_active_schedules=1)
    first = await created(daemon, scheduled("first", "{cron: '@daily'}"))
    second = await created(daemon, scheduled("second", "{cron: '@daily'}"))
    await daemon.stub.ScheduleWorkflow(pb.ScheduleWorkflowRequest(workflow_id=first))
    # Changing the policies of an active schedule takes no new place.
    await daemon.stub.ScheduleWorkflow(
        pb.ScheduleWorkflowRequest(workflow_id=first, overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL)
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.ScheduleWorkflow(pb.ScheduleWorkflowRequest(workflow_id=second))
    message = refusal(info, "quota_active_schedules")
    assert "the company has 1 active schedules, its quota of 1" in message
    await daemon.stub.UnscheduleWorkflow(pb.UnscheduleWorkflowRequest(workflow_id=first))
    await daemon.stub.ScheduleWorkflow(pb.ScheduleWorkflowRequest(workflow_id=second))


async def test_the_shortest_interval(store_url: str, start_daemon: Start) -> None:
    daemon = await start_daemon(store=store_url)  # the default quota: 60 s
    often = scheduled("often", "{every: {seconds: 10}}")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.CreateWorkflow(
            pb.CreateWorkflowRequest(specification=often, schedule_immediately=True)
        )
    message = refusal(info, "quota_min_every_s")
    assert message.startswith("schedule.every is 10 s, shorter than the quota of 60 s")
    listed = await daemon.stub.ListWorkflows(pb.ListWorkflowsRequest())
    assert list(listed.workflows) == []  # refused before anything was stored
    workflow_id = await created(daemon, often)  # stored unscheduled, it fires nothing
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.ScheduleWorkflow(pb.ScheduleWorkflowRequest(workflow_id=workflow_id))
    refusal(info, "quota_min_every_s")
    # An active schedule does not take a new version's shorter interval either.
    calm = scheduled("calm", "{every: {minutes: 2}}")
    calm_id = await created(daemon, calm)
    await daemon.stub.ScheduleWorkflow(pb.ScheduleWorkflowRequest(workflow_id=calm_id))
    faster = scheduled("calm", "{every: {seconds: 10}}", version="2.0.0")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=faster))
    refusal(info, "quota_min_every_s")
    got = await daemon.stub.GetWorkflow(pb.GetWorkflowRequest(id=calm_id))
    assert list(got.workflow.versions) == ["1.0.0"]


async def test_trigger_rate(start_daemon: Start, tmp_path: Path) -> None:
    daemon = await companies(
        start_daemon, tmp_path, quota_trigger_rate_per_s=0.001, quota_trigger_burst=3, **NOWHERE
    )
    acme = await created(daemon, workflow("eager", TASK), ACME)
    globex = await created(daemon, workflow("calm", TASK), GLOBEX)
    for _ in range(3):
        await trigger(daemon, acme, ACME)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await trigger(daemon, acme, ACME)
    message = refusal(info, "quota_trigger_rate_per_s")
    assert "faster than its quota of 0.001 per second in bursts of up to 3" in message
    assert "quota_trigger_burst" in message
    assert "retry in" in message
    await trigger(daemon, globex, GLOBEX)  # another company has its own bucket


async def test_stored_bytes_are_counted_exactly_and_survive_a_restart(
    store_url: str, start_daemon: Start, tmp_path: Path
) -> None:
    settings = {"store": store_url, "quota_stored_bytes": 5000, **NOWHERE}
    daemon = await companies(start_daemon, tmp_path, **settings)
    # Its runs store their input and their context, `{}`, and nothing more while they wait.
    pause = "  - pause: {wait: P1D}\n"
    acme = await created(daemon, workflow("big", pause), ACME)
    big = jv({"pad": "x" * 2000})
    size = len(json.dumps({"pad": "x" * 2000}, separators=(",", ":"))) + 2  # as the store writes it
    await trigger(daemon, acme, ACME, input=big)
    await trigger(daemon, acme, ACME, input=big)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await trigger(daemon, acme, ACME, input=big)
    message = refusal(info, "quota_stored_bytes")
    assert f"storing {size} more bytes of run values would bring the company's to {3 * size}" in (
        message
    )
    assert "its quota of 5000 bytes" in message
    # An idempotent retry of a run that exists stores nothing more.
    key = {"input": jv({"small": 1}), "idempotency_key": "k"}
    first = await trigger(daemon, acme, ACME, **key)
    assert await trigger(daemon, acme, ACME, **key) == first
    globex = await created(daemon, workflow("big", pause), GLOBEX)
    await trigger(daemon, globex, GLOBEX, input=big)  # another company's bytes are its own
    await daemon.channel.close()
    await daemon.app.drain()

    again = await companies(start_daemon, tmp_path, data_dir=daemon.data_dir, **settings)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await trigger(again, acme, ACME, input=big)
    # Counted once for the idempotent run: its 11 bytes, `{"small":1}`, and its context's 2.
    assert f"would bring the company's to {3 * size + 13}" in refusal(info, "quota_stored_bytes")
    await trigger(again, acme, ACME, input=jv({"small": 2}))


async def test_a_scheduled_fire_refused_by_a_quota_is_recorded_as_skipped(
    store_url: str, start_daemon: Start
) -> None:
    clock = ManualClock(T0)
    daemon = await start_daemon(clock=clock, store=store_url, quota_active_runs=1, **NOWHERE)
    workflow_id = await created(daemon, scheduled("minutely", "{cron: '* * * * *'}", TASK))
    await daemon.stub.ScheduleWorkflow(
        pb.ScheduleWorkflowRequest(
            workflow_id=workflow_id, overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL
        )
    )
    first = T0.replace(second=0) + timedelta(minutes=1)
    clock.set(first)
    fired = await decision_at(daemon, workflow_id, first)
    assert fired.outcome == pb.FIRE_OUTCOME_FIRED
    clock.set(first + timedelta(minutes=1))
    skipped = await decision_at(daemon, workflow_id, first + timedelta(minutes=1))
    assert skipped.outcome == pb.FIRE_OUTCOME_SKIPPED
    assert skipped.reason.startswith("refused by a quota: the company has 1 active runs")
    assert "(setting quota_active_runs)" in skipped.reason
    assert not skipped.run_id
    schedule = await daemon.stub.GetSchedule(pb.GetScheduleRequest(workflow_id=workflow_id))
    assert at(schedule.schedule.next_fire_at) == first + timedelta(minutes=2)


def view(name: str, rows: int) -> str:
    return workflow(
        name,
        f"  - {name}:\n"
        "      call: CreateMaterializedViewIfNotExists\n"
        "      with:\n"
        f"        nql: SELECT range AS x, md5(range::VARCHAR) AS h FROM range({rows})\n"
        f"        datasetName: {name}\n",
    )


async def run_to_end(daemon: Daemon, text: str) -> pb.Run:
    run_id = await trigger(daemon, await created(daemon, text))
    await ended(daemon, run_id, ())
    return (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run_id))).run


async def test_the_data_planes_dataset_bytes(start_daemon: Start) -> None:
    quota = 8 * MIB
    daemon = await start_daemon(quota_dataset_bytes=quota)
    # A result DuckDB writes to the file before the commit (a million rows) is measured
    # inside the job's transaction: the job fails and nothing of it stays.
    big = await run_to_end(daemon, view("big", 1_000_000))
    assert big.status == pb.RUN_STATUS_FAILED
    detail = big.tasks[0].error.detail
    assert detail.startswith("the job would take the company's datasets to "), detail
    assert f"past its quota of {quota} bytes (the data plane's --quota-dataset-bytes)" in detail
    # A smaller result is measured once committed (the documented margin): it passes, and
    # from then on the company's jobs and loads are refused.
    medium = await run_to_end(daemon, view("medium", 500_000))
    assert medium.status == pb.RUN_STATUS_COMPLETED, medium.error
    small = await run_to_end(daemon, workflow("small", TASK))
    assert small.status == pb.RUN_STATUS_FAILED
    assert small.tasks[0].error.detail.startswith("the company's datasets already take ")
    assert f"the whole of its quota of {quota} bytes" in small.tasks[0].error.detail
    # A DELETE still runs, to make room.
    delete = (
        "  - prune:\n"
        "      call: ExecuteDml\n"
        "      with: {nql: 'DELETE FROM company_data.medium WHERE x < 10'}\n"
    )
    pruned = await run_to_end(daemon, workflow("prune", delete))
    assert pruned.status == pb.RUN_STATUS_COMPLETED, pruned.error
    async with aiohttp.ClientSession(daemon.jobs_url) as session:
        async with session.post(
            "/datasets/loaded/load", params={"format": "csv"}, data=b"x\n1\n"
        ) as resp:
            problem = await resp.json()
            assert resp.status == 413, problem
        assert problem["detail"].startswith("the company's datasets already take ")
        async with session.get("/datasets") as resp:
            names = [d["dataset_name"] for d in (await resp.json())["records"]]
    assert names == ["medium"]
