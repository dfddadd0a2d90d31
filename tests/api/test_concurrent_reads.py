"""Reads run on a pool of connections: a large listing does not hold up the small reads that
arrive after it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from google.protobuf import json_format, struct_pb2

from tests.conftest import Daemon, eventually
from tests.specs import spec
from workflowd.v1 import workflow_service_pb2 as pb

RUNS = 1000
TASKS = 20
GETS = 100


def _tasks(count: int) -> str:
    return "".join(
        f"  - t{i}:\n"
        "      call: CreateMaterializedViewIfNotExists\n"
        f"      with: {{nql: SELECT 1 AS one, datasetName: v{i}}}\n"
        for i in range(count)
    )


async def test_get_runs_do_not_wait_for_a_page_of_1000_runs(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    # No jobs system answers: each run's first task fails at once and the others are skipped,
    # which leaves 1,000 stored runs of 20 tasks each without running 20,000 jobs.
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
    padding = json_format.ParseDict({"pad": "x" * 1500}, struct_pb2.Value())
    run_ids: list[str] = []

    async def trigger(count: int) -> None:
        for _ in range(count):
            reply = await stub.TriggerWorkflow(
                pb.TriggerWorkflowRequest(workflow_id=workflow_id, input=padding)
            )
            run_ids.append(reply.run.id)

    await asyncio.gather(*(trigger(RUNS // 20) for _ in range(20)))

    async def all_failed() -> bool:
        failed, token = 0, ""
        while True:
            page = await stub.ListRuns(
                pb.ListRunsRequest(
                    statuses=[pb.RUN_STATUS_FAILED], page_size=1000, page_token=token
                )
            )
            failed += len(page.runs)
            token = page.next_page_token
            if not token:
                return failed == RUNS

    await eventually(all_failed, timeout_s=60)

    finished: list[str] = []
    listing = stub.ListRuns(pb.ListRunsRequest(workflow_id=workflow_id, page_size=1000))
    # The listing is sent first: calls on one channel leave in the order they are made.
    listed = asyncio.ensure_future(listing)
    listed.add_done_callback(lambda _: finished.append("list"))

    async def get(run_id: str) -> None:
        reply = await stub.GetRun(pb.GetRunRequest(run_id=run_id))
        assert reply.run.id == run_id
        finished.append("get")

    await asyncio.gather(listed, *(get(run_id) for run_id in run_ids[:GETS]))
    page = listed.result()
    assert len(page.runs) + (1 if page.next_page_token else 0) > 1
    assert all(len(run.tasks) == TASKS for run in page.runs)
    # Read one after another, the listing would answer before any GetRun sent after it.
    gets_before_listing = finished.index("list")
    assert gets_before_listing >= GETS // 2, finished
