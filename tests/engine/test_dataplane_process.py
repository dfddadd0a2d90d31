"""The embedded data plane runs as a supervised child process: killed mid-job, it is started
again, every run completes, and no task's job is submitted twice."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from tests.conftest import Daemon, eventually
from tests.specs import spec
from workflowd.v1 import workflow_service_pb2 as pb

RUNS = 50
TASKS = (
    "  - count:\n"
    "      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: 'SELECT count(*) AS n FROM range(3000000)', datasetName: counted}\n"
    "  - again:\n"
    "      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: 'SELECT 1 AS one', datasetName: one}\n"
)


async def all_jobs(jobs_url: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(jobs_url) as session:
        offset = 0
        while True:
            params = {"per_page": "500", "offset": str(offset), "order_by": "created_at_asc"}
            async with session.get("/jobs", params=params) as resp:
                assert resp.status == 200, await resp.text()
                page = await resp.json()
            records += page["records"]
            offset += len(page["records"])
            if not page["records"] or offset >= page["total_records"]:
                return records


async def test_a_killed_data_plane_is_restarted_and_every_run_completes_once(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon = await start_daemon(jobs_retry_deadline_s=120.0)
    plane = daemon.app.dataplane
    assert plane is not None
    first_pid = plane.pid
    assert first_pid is not None
    created = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=spec(name="survivor", tasks=TASKS))
    )
    run_ids = [
        (
            await daemon.stub.TriggerWorkflow(
                pb.TriggerWorkflowRequest(workflow_id=created.workflow.id)
            )
        ).run.id
        for _ in range(RUNS)
    ]

    async def every_run_mid_job() -> list[dict[str, Any]]:
        jobs = await all_jobs(daemon.jobs_url)
        return jobs if len({j["metadata"]["workflow_run_id"] for j in jobs}) == RUNS else []

    submitted = await eventually(every_run_mid_job, timeout_s=60)
    assert any(job["state"] in ("pending", "running") for job in submitted)
    os.kill(first_pid, signal.SIGKILL)

    async def all_completed() -> bool:
        statuses = [
            (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run_id))).run.status
            for run_id in run_ids
        ]
        assert pb.RUN_STATUS_FAILED not in statuses
        return statuses == [pb.RUN_STATUS_COMPLETED] * RUNS

    await eventually(all_completed, timeout_s=180, interval_s=0.2)

    # The last jobs may have ended before the kill landed, so the runs can complete while the
    # supervisor is still in its backoff: wait for the new child rather than assume it is up.
    async def restarted() -> bool:
        return plane.restarts >= 1 and plane.pid not in (None, first_pid)

    await eventually(restarted, timeout_s=60)
    jobs = await all_jobs(daemon.jobs_url)
    per_task = Counter((j["metadata"]["workflow_run_id"], j["metadata"]["task_name"]) for j in jobs)
    assert set(per_task) == {(run_id, task) for run_id in run_ids for task in ("count", "again")}
    assert set(per_task.values()) == {1}
    assert {job["state"] for job in jobs} == {"completed"}
