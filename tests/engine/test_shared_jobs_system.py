"""Daemons without tokens sharing one jobs system through its service token: each files its
jobs and datasets under its own `--jobs-company`, and sees nothing of the other's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.conftest import Daemon
from tests.engine.support import Plane, apply, finished, trigger, workflow
from workflowd.v1 import workflow_service_pb2 as pb

Start = Callable[..., Awaitable[Daemon]]


async def test_two_daemons_on_one_data_plane_keep_their_datasets_and_jobs_apart(
    start_daemon: Start,
) -> None:
    first, second = await start_daemon(), await start_daemon()
    assert first.jobs_url == second.jobs_url  # the one data plane of this test process
    runs = {}
    for daemon, value in ((first, 1), (second, 2)):
        spec = workflow(
            "shared",
            "  - build:\n      call: CreateMaterializedViewIfNotExists\n"
            f"      with: {{nql: SELECT {value} AS n, datasetName: same_name}}\n",
        )
        wf = await apply(daemon, spec)
        run = await finished(daemon, (await trigger(daemon, wf.id)).id)
        assert run.status == pb.RUN_STATUS_COMPLETED, run.problem
        runs[value] = run
    for daemon, value in ((first, 1), (second, 2)):
        plane = Plane.of(daemon)
        try:
            assert await plane.rows("same_name") == [{"n": value}]
            other = runs[3 - value]
            assert await plane.jobs_for_run(other.id) == []
            assert [job["job_id"] for job in await plane.jobs_for_run(runs[value].id)] == [
                runs[value].tasks[0].job_id
            ]
        finally:
            await plane.aclose()
