"""Replicas of workflowd as real subprocesses sharing one PostgreSQL store and one data plane:
runs triggered across them all complete with one job per task, a replica killed mid-run has its
runs adopted, a watcher on a survivor sees every event once and in order, and two schedulers
decide each instant once, even when one of them is killed."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from tests.conftest import eventually
from tests.engine.support import SLOW_NQL, workflow
from tests.engine.test_dataplane_process import all_jobs
from tests.postgres import fresh_schema
from tests.procs import Process, start_dataplane, start_workflowd
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

RUNS = 200
# Short enough that adoption comes soon after a kill, long enough that a replica starved of CPU
# on a busy machine still renews in time (a replica whose lease ran out stops, by design).
LEASE_S = 8
TASKS = (
    "  - count:\n"
    "      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: 'SELECT count(*) AS n FROM range(2000000)', datasetName: counted}\n"
    "  - again:\n"
    "      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: 'SELECT 1 AS one', datasetName: one}\n"
)
TERMINAL = {
    pb.RUN_EVENT_TYPE_RUN_COMPLETED,
    pb.RUN_EVENT_TYPE_RUN_FAILED,
    pb.RUN_EVENT_TYPE_RUN_CANCELLED,
}


class Replica:
    def __init__(self, proc: Process, address: str) -> None:
        self.proc = proc
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = pb_grpc.WorkflowServiceStub(self.channel)

    async def aclose(self) -> None:
        await self.channel.close()
        await self.proc.stop()


@asynccontextmanager
async def cluster(tmp_path: Path, count: int) -> AsyncIterator[tuple[list[Replica], str]]:
    """`count` replicas on one new PostgreSQL schema and one data plane (its URL)."""
    with fresh_schema() as store:
        async with AsyncExitStack() as stack:
            plane, plane_url = await start_dataplane(tmp_path / "plane")
            stack.push_async_callback(plane.stop)
            replicas = []
            for i in range(count):
                proc, address = await start_workflowd(
                    tmp_path / f"replica-{i}",
                    plane_url,
                    # A schedule of one second, below the default quota's shortest interval.
                    extra=(
                        *("--store", store, "--replica-lease-s", str(LEASE_S)),
                        *("--quota-min-every-s", "1"),
                    ),
                )
                replica = Replica(proc, address)
                stack.push_async_callback(replica.aclose)
                replicas.append(replica)
            yield replicas, plane_url


async def terminal_status(stub: pb_grpc.WorkflowServiceStub, run_id: str) -> pb.RunStatus.V:
    run = (await stub.GetRun(pb.GetRunRequest(run_id=run_id))).run
    return run.status


@pytest.mark.parametrize("count", [2, 3])
async def test_runs_spread_over_replicas_complete_once_and_a_killed_ones_are_adopted(
    tmp_path: Path, count: int
) -> None:
    async with cluster(tmp_path, count) as (replicas, plane_url):
        first, survivor = replicas[0], replicas[-1]
        created = await first.stub.CreateWorkflow(
            pb.CreateWorkflowRequest(specification=workflow("spread", TASKS))
        )
        workflow_id = created.workflow.id
        # A first run gives the watcher a place in the log to start from: nothing after it
        # can be missed, whichever replica writes it.
        probe = await survivor.stub.TriggerWorkflow(
            pb.TriggerWorkflowRequest(workflow_id=workflow_id)
        )
        probe_events = [
            response.event
            async for response in survivor.stub.WatchRun(pb.WatchRunRequest(run_id=probe.run.id))
        ]
        watch = survivor.stub.WatchRuns(
            pb.WatchRunsRequest(after_global_seq=probe_events[-1].global_seq)
        )
        seen: list[pb.RunEvent] = []

        async def follow() -> None:
            ended = 0
            async for response in watch:
                seen.append(response.event)
                ended += response.event.type in TERMINAL
                if ended == RUNS:
                    return

        watching = asyncio.create_task(follow())

        async def trigger(i: int) -> tuple[int, str]:
            stub = replicas[i % count].stub
            reply = await stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=workflow_id))
            return i % count, reply.run.id

        triggered = await asyncio.gather(*(trigger(i) for i in range(RUNS)))
        run_ids = [run_id for _, run_id in triggered]
        on_first = [run_id for where, run_id in triggered if where == 0]

        async def first_replica_mid_run() -> bool:
            jobs = await all_jobs(plane_url)
            started = {j["metadata"]["workflow_run_id"] for j in jobs}
            statuses = [await terminal_status(survivor.stub, r) for r in on_first]
            return bool(started & set(on_first)) and pb.RUN_STATUS_RUNNING in statuses

        await eventually(first_replica_mid_run, timeout_s=60, interval_s=0.05)
        await first.proc.kill9()

        async def all_completed() -> bool:
            statuses = [await terminal_status(survivor.stub, r) for r in run_ids]
            assert pb.RUN_STATUS_FAILED not in statuses
            return statuses == [pb.RUN_STATUS_COMPLETED] * RUNS

        await eventually(all_completed, timeout_s=240, interval_s=0.5)
        async with asyncio.timeout(30):
            await watching

        jobs = [j for j in await all_jobs(plane_url) if j["metadata"]["workflow_run_id"] in run_ids]
        per_task = Counter(
            (j["metadata"]["workflow_run_id"], j["metadata"]["task_name"]) for j in jobs
        )
        assert set(per_task) == {(r, task) for r in run_ids for task in ("count", "again")}
        assert set(per_task.values()) == {1}
        assert {job["state"] for job in jobs} == {"completed"}

        positions = [event.global_seq for event in seen]
        assert positions == sorted(set(positions)), "out of order or repeated"
        by_run: defaultdict[str, list[int]] = defaultdict(list)
        for event in seen:
            by_run[event.run_id].append(event.seq)
        assert set(by_run) == set(run_ids)
        for run_id, seqs in by_run.items():
            assert seqs == list(range(1, len(seqs) + 1)), (run_id, seqs)
        terminal = [e.run_id for e in seen if e.type in TERMINAL]
        assert sorted(terminal) == sorted(run_ids)


async def test_two_schedulers_decide_each_instant_once_even_when_one_is_killed(
    tmp_path: Path,
) -> None:
    quick = (
        "  - one:\n"
        "      call: CreateMaterializedViewIfNotExists\n"
        "      with: {nql: 'SELECT 1 AS one', datasetName: one}\n"
    )
    async with cluster(tmp_path, 2) as (replicas, _):
        first, second = replicas
        created = await first.stub.CreateWorkflow(
            pb.CreateWorkflowRequest(
                specification=workflow("ticking", quick, extra="schedule: {every: {seconds: 1}}\n"),
            )
        )
        workflow_id = created.workflow.id
        await first.stub.ScheduleWorkflow(
            pb.ScheduleWorkflowRequest(
                workflow_id=workflow_id,
                overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL,
                catchup_policy=pb.CATCHUP_POLICY_ALL,
            )
        )

        async def decisions(stub: pb_grpc.WorkflowServiceStub) -> list[pb.FireDecision]:
            reply = await stub.GetSchedule(pb.GetScheduleRequest(workflow_id=workflow_id))
            return list(reply.schedule.recent_decisions)

        async def decided(stub: pb_grpc.WorkflowServiceStub, at_least: int) -> bool:
            return len(await decisions(stub)) >= at_least

        await eventually(lambda: decided(first.stub, 3), timeout_s=30, interval_s=0.1)
        await first.proc.kill9()
        before = len(await decisions(second.stub))
        # The survivor takes the schedule over on its next renewal and catches up what the
        # killed replica left undecided.
        await eventually(
            lambda: decided(second.stub, before + LEASE_S + 3), timeout_s=60, interval_s=0.2
        )
        await second.stub.UnscheduleWorkflow(pb.UnscheduleWorkflowRequest(workflow_id=workflow_id))

        # Unscheduling is recorded too, at its own moment: only the instants are compared.
        made = [d for d in await decisions(second.stub) if d.outcome != pb.FIRE_OUTCOME_STOPPED]
        instants = sorted(d.fire_time.ToDatetime() for d in made)
        assert len(instants) == len(set(instants)), "an instant was decided twice"
        gaps = [b - a for a, b in itertools.pairwise(instants)]
        assert set(gaps) == {timedelta(seconds=1)}, "an instant was lost"
        fired = [d.run_id for d in made if d.run_id]
        assert len(fired) == len(set(fired))
        runs = await second.stub.ListRuns(
            pb.ListRunsRequest(workflow_id=workflow_id, page_size=1000)
        )
        scheduled = [run.scheduled_at.ToDatetime() for run in runs.runs]
        assert len(scheduled) == len(set(scheduled)), "two runs for one instant"


async def test_a_replica_whose_lease_ran_out_stops_and_says_why(tmp_path: Path) -> None:
    with fresh_schema() as store:
        plane, plane_url = await start_dataplane(tmp_path / "plane")
        try:
            proc, _ = await start_workflowd(
                tmp_path / "replica",
                plane_url,
                extra=("--store", store, "--replica-lease-s", "1"),
            )
            # As if it had been cut off from the store for longer than its lease: another
            # replica may have adopted its runs, so it must not go on executing them.
            with psycopg.connect(store, autocommit=True) as conn:
                conn.execute("UPDATE replicas SET lease_until = '2000-01-01T00:00:00.000000+00:00'")
            assert await proc.wait(timeout_s=30) == 1
            said = "".join(proc.last_lines)
            assert "lost its lease" in said, said
            assert "Traceback" not in said
        finally:
            await plane.stop()


async def job_of(plane_url: str, run_id: str) -> dict[str, Any] | None:
    jobs = [j for j in await all_jobs(plane_url) if j["metadata"]["workflow_run_id"] == run_id]
    assert len(jobs) <= 1, jobs
    return jobs[0] if jobs else None


async def test_a_cancel_asked_of_one_replica_stops_a_run_executing_on_another(
    tmp_path: Path,
) -> None:
    slow = (
        "  - slow:\n"
        "      call: CreateMaterializedViewIfNotExists\n"
        f"      with: {{nql: '{SLOW_NQL}', datasetName: slow}}\n"
    )
    async with cluster(tmp_path, 2) as (replicas, plane_url):
        executing, asked = replicas
        created = await executing.stub.CreateWorkflow(
            pb.CreateWorkflowRequest(specification=workflow("stoppable", slow))
        )
        run = (
            await executing.stub.TriggerWorkflow(
                pb.TriggerWorkflowRequest(workflow_id=created.workflow.id)
            )
        ).run
        # Opened on the replica that is asked to cancel, which executes nothing of the run:
        # what it sees comes from the shared log.
        watch = asked.stub.WatchRun(pb.WatchRunRequest(run_id=run.id))
        seen: list[pb.RunEvent] = []
        subscribed = asyncio.Event()

        async def follow() -> None:
            async for response in watch:
                seen.append(response.event)
                subscribed.set()  # an event arrived: the watch subscribed before reading any

        watching = asyncio.create_task(follow())
        async with asyncio.timeout(30):
            await subscribed.wait()

        async def job_running() -> bool:
            job = await job_of(plane_url, run.id)
            return job is not None and job["state"] == "running"

        await eventually(job_running, timeout_s=30, interval_s=0.05)
        await asked.stub.CancelRun(pb.CancelRunRequest(run_id=run.id, reason="enough"))

        async def cancelled_on_both() -> bool:
            ran = [(await r.stub.GetRun(pb.GetRunRequest(run_id=run.id))).run for r in replicas]
            return all(r.status == pb.RUN_STATUS_CANCELLED for r in ran)

        # The query runs for many minutes: only a cancel reaching the executor ends it.
        await eventually(cancelled_on_both, timeout_s=45, interval_s=0.1)
        async with asyncio.timeout(30):
            await watching

        for replica in replicas:
            ended = (await replica.stub.GetRun(pb.GetRunRequest(run_id=run.id))).run
            assert ended.cancel_reason == "cancelled on request: enough"
            assert not ended.HasField("error")

        async def job_cancelled() -> bool:
            job = await job_of(plane_url, run.id)
            assert job is not None
            return job["state"] == "cancelled"

        await eventually(job_cancelled, timeout_s=30, interval_s=0.1)

        kinds = [e.type for e in seen]
        assert kinds.count(pb.RUN_EVENT_TYPE_RUN_CANCELLING) == 1, kinds
        assert kinds.count(pb.RUN_EVENT_TYPE_RUN_CANCELLED) == 1, kinds
        assert kinds.index(pb.RUN_EVENT_TYPE_RUN_CANCELLING) < kinds.index(
            pb.RUN_EVENT_TYPE_RUN_CANCELLED
        )
        assert kinds[-1] == pb.RUN_EVENT_TYPE_RUN_CANCELLED
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))


async def test_a_backfill_chain_of_a_killed_replica_is_adopted_and_runs_in_order(
    tmp_path: Path,
) -> None:
    # Long enough (some 10 s here) to still run when the survivor adopts the first run: if the runs
    # that wait for it started at adoption, they would start before it ended.
    long = (
        "  - long:\n"
        "      call: CreateMaterializedViewIfNotExists\n"
        "      with:\n"
        "        nql: 'SELECT a.range AS x, sum(hash(a.range * b.range)) AS h"
        " FROM range(25000) a, range(25000) b GROUP BY a.range'\n"
        "        datasetName: long\n"
        "  - short:\n"
        "      call: CreateMaterializedViewIfNotExists\n"
        "      with: {nql: 'SELECT 1 AS one', datasetName: one}\n"
    )
    async with cluster(tmp_path, 2) as (replicas, plane_url):
        first, survivor = replicas
        created = await first.stub.CreateWorkflow(
            pb.CreateWorkflowRequest(
                specification=workflow("chained", long, extra="schedule: {cron: '@hourly'}\n")
            )
        )
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
        request = pb.BackfillWorkflowRequest(workflow_id=created.workflow.id)
        request.start_time.FromDatetime(start)
        request.end_time.FromDatetime(start + timedelta(hours=2, minutes=1))
        backfill = await first.stub.BackfillWorkflow(request)
        run_ids = list(backfill.run_ids)
        assert backfill.created == 3

        async def first_run_mid_job() -> bool:
            job = await job_of(plane_url, run_ids[0])
            return job is not None and job["state"] == "running"

        await eventually(first_run_mid_job, timeout_s=30, interval_s=0.05)
        await first.proc.kill9()

        async def runs() -> list[pb.Run]:
            return [(await survivor.stub.GetRun(pb.GetRunRequest(run_id=r))).run for r in run_ids]

        def in_order(chain: list[pb.Run]) -> None:
            for previous, following in itertools.pairwise(chain):
                if not following.HasField("started_at"):
                    continue
                if not previous.HasField("ended_at") or (
                    following.started_at.ToDatetime() < previous.ended_at.ToDatetime()
                ):
                    pytest.fail(f"run {following.id} started before {previous.id} ended")

        async def all_completed() -> bool:
            chain = await runs()
            in_order(chain)  # checked all along: a run started too early fails at once
            statuses = [run.status for run in chain]
            assert pb.RUN_STATUS_FAILED not in statuses
            assert pb.RUN_STATUS_CANCELLED not in statuses
            return statuses == [pb.RUN_STATUS_COMPLETED] * 3

        await eventually(all_completed, timeout_s=60, interval_s=0.2)
        ended = await runs()
        assert [r.after_run_id for r in ended] == ["", *run_ids[:-1]]
        in_order(ended)

        jobs = [j for j in await all_jobs(plane_url) if j["metadata"]["workflow_run_id"] in run_ids]
        per_task = Counter(
            (j["metadata"]["workflow_run_id"], j["metadata"]["task_name"]) for j in jobs
        )
        assert set(per_task) == {(r, task) for r in run_ids for task in ("long", "short")}
        assert set(per_task.values()) == {1}
        assert {job["state"] for job in jobs} == {"completed"}
