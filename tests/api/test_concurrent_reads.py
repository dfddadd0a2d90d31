"""Reads run on a pool of connections: a large listing does not hold up the small reads that
arrive after it. Proved by order, not by time: while reads hold all but one of the pool's
connections open (as long listings do), a GetRun still answers. Nothing here waits on a
deadline that a busy machine could miss: the runs' ends are counted from a `WatchRuns` stream,
and the deadlines below only end a test that hangs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest
from google.protobuf import json_format, struct_pb2

from tests.conftest import Daemon
from tests.specs import spec
from workflowd.store.db import READERS
from workflowd.v1 import workflow_service_pb2 as pb

RUNS = 1000
TASKS = 20
# Far longer than any GetRun takes, however busy the machine: reaching it means the read was
# waiting for a connection.
STUCK_S = 120.0


def _tasks(count: int) -> str:
    return "".join(
        f"  - t{i}:\n"
        "      call: CreateMaterializedViewIfNotExists\n"
        f"      with: {{nql: SELECT 1 AS one, datasetName: v{i}}}\n"
        for i in range(count)
    )


# Creating 1,000 runs and failing them is the slow part on a busy machine; only a hang should
# reach this.
@pytest.mark.timeout(600)
async def test_get_runs_do_not_wait_for_a_page_of_1000_runs(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    # No jobs system answers: each run's first task fails at once and the others never start,
    # which leaves 1,000 stored runs without running 20,000 jobs.
    daemon = await start_daemon(
        jobs_url="http://127.0.0.1:9",
        jobs_retry_deadline_s=0.01,
        quota_trigger_burst=RUNS,  # all at once, more than the default burst
    )
    stub = daemon.stub
    created = await stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=spec(name="wide", tasks=_tasks(TASKS)))
    )
    workflow_id = created.workflow.id
    ends = stub.WatchRuns(pb.WatchRunsRequest(statuses=[pb.RUN_STATUS_FAILED]))
    await ends.initial_metadata()  # subscribed: no run's end is missed from here on
    padding = json_format.ParseDict({"pad": "x" * 1500}, struct_pb2.Value())
    run_ids: list[str] = []

    async def trigger(count: int) -> None:
        for _ in range(count):
            reply = await stub.TriggerWorkflow(
                pb.TriggerWorkflowRequest(workflow_id=workflow_id, input=padding)
            )
            run_ids.append(reply.run.id)

    await asyncio.gather(*(trigger(RUNS // 20) for _ in range(20)))

    failed: set[str] = set()
    async for response in ends:
        if response.event.type == pb.RUN_EVENT_TYPE_RUN_FAILED:
            failed.add(response.event.run_id)
            if failed >= set(run_ids):
                break
    ends.cancel()
    page = await stub.ListRuns(pb.ListRunsRequest(workflow_id=workflow_id, page_size=1000))
    assert len(page.runs) == RUNS
    assert all(len(run.tasks) == 1 for run in page.runs)

    # Hold every pooled connection but one inside an open read, as long listings would.
    store = daemon.app.store
    release = asyncio.Event()
    holding: list[asyncio.Task[None]] = []
    held = asyncio.Barrier(READERS)

    async def hold() -> None:
        async with store.db.reader() as reader:
            await reader.fetch("SELECT COUNT(*) AS n FROM runs")
            await held.wait()
            await release.wait()

    for _ in range(READERS - 1):
        holding.append(asyncio.create_task(hold()))
    await asyncio.wait_for(held.wait(), STUCK_S)  # every holder is inside its read
    try:
        for run_id in run_ids[:20]:
            reply = await asyncio.wait_for(stub.GetRun(pb.GetRunRequest(run_id=run_id)), STUCK_S)
            assert reply.run.id == run_id
    finally:
        release.set()
        for task in holding:
            with contextlib.suppress(asyncio.CancelledError):
                await task
