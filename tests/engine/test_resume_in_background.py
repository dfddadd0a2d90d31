"""A restart with many runs in flight serves before every run has its executor again; what
arrives meanwhile (a cancel, a GetRun) is answered and kept."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.conftest import Daemon, eventually
from tests.specs import spec
from workflowd.v1 import workflow_service_pb2 as pb

RUNS = 600  # more than one batch of resumption
SLOW = (
    "  - count:\n"
    "      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: 'SELECT count(*) AS n FROM range(100000000000)', datasetName: slow}\n"
)


async def test_runs_resume_after_the_api_serves_and_an_early_cancel_is_kept(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    first = await start_daemon(dataplane_workers=1, jobs_retry_deadline_s=60.0)
    created = await first.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=spec(name="many", tasks=SLOW))
    )
    run_ids = [
        (
            await first.stub.TriggerWorkflow(
                pb.TriggerWorkflowRequest(workflow_id=created.workflow.id)
            )
        ).run.id
        for _ in range(RUNS)
    ]

    async def all_running() -> bool:
        page = await first.stub.ListRuns(
            pb.ListRunsRequest(statuses=[pb.RUN_STATUS_RUNNING], page_size=1000)
        )
        return len(page.runs) == RUNS

    await eventually(all_running, timeout_s=120, interval_s=0.2)
    await first.channel.close()
    await first.app.drain()

    again = await start_daemon(
        data_dir=first.data_dir, dataplane_workers=1, jobs_retry_deadline_s=60.0
    )
    # The newest run is resumed last: cancel it at once, whether or not it has its executor.
    last = run_ids[-1]
    cancelled = await again.stub.CancelRun(pb.CancelRunRequest(run_id=last, reason="early"))
    assert cancelled.run.status in (pb.RUN_STATUS_CANCELLING, pb.RUN_STATUS_CANCELLED)
    assert again.app.runs is not None
    await again.app.runs.resumed()
    assert all(again.app.runs.launcher.running(run_id) for run_id in run_ids[:-1])

    async def last_cancelled() -> pb.Run | None:
        run = (await again.stub.GetRun(pb.GetRunRequest(run_id=last))).run
        return run if run.status == pb.RUN_STATUS_CANCELLED else None

    run = await eventually(last_cancelled, timeout_s=60)
    assert run.cancel_reason == "cancelled on request: early"
    assert run.tasks[0].status == pb.TASK_STATUS_CANCELLED
    for run_id in run_ids[:-1]:
        got = (await again.stub.GetRun(pb.GetRunRequest(run_id=run_id))).run
        assert got.status == pb.RUN_STATUS_RUNNING
