"""kill -9 in the middle of a burst of CreateWorkflow and TriggerWorkflow calls: every write the
daemon acknowledged is there after the restart, and every acknowledged run completes with
exactly one job per task."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from tests.engine.support import Plane, workflow
from tests.procs import start_dataplane, start_workflowd
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

CLIENTS = 16
KILL_AFTER_ACKS = 40


def spec(index: int) -> str:
    return workflow(
        f"burst-{index}",
        f"""\
  - build:
      call: CreateMaterializedViewIfNotExists
      with: {{nql: SELECT {index} AS n, datasetName: burst_{index}}}
""",
    )


@dataclass
class Acked:
    workflows: dict[str, str] = field(default_factory=dict)  # workflow id -> name
    runs: dict[str, str] = field(default_factory=dict)  # run id -> workflow id
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self) -> None:
        if len(self.workflows) + len(self.runs) >= KILL_AFTER_ACKS:
            self.enough.set()


async def client(stub: pb_grpc.WorkflowServiceStub, first: int, acked: Acked) -> None:
    """Creates workflows and triggers each one until the daemon goes away."""
    index = first
    while True:
        try:
            created = await stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=spec(index)))
            acked.workflows[created.workflow.id] = created.workflow.name
            acked.note()
            run = await stub.TriggerWorkflow(
                pb.TriggerWorkflowRequest(workflow_id=created.workflow.id)
            )
            acked.runs[run.run.id] = created.workflow.id
            acked.note()
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                return  # the daemon died under this call
            raise
        index += CLIENTS


async def test_every_acknowledged_write_survives_a_kill_during_a_burst(tmp_path: Path) -> None:
    plane_proc, plane_url = await start_dataplane(tmp_path / "plane")
    plane = Plane(plane_url)
    daemon, address = await start_workflowd(tmp_path / "workflowd", plane_url)
    channel = grpc.aio.insecure_channel(address)
    try:
        stub = pb_grpc.WorkflowServiceStub(channel)
        acked = Acked()
        clients = [asyncio.create_task(client(stub, i, acked)) for i in range(CLIENTS)]
        async with asyncio.timeout(60):
            await acked.enough.wait()
        # Calls are in flight on every client at this moment: the kill lands mid-burst.
        await daemon.kill9()
        await asyncio.gather(*clients)
        await channel.close()

        daemon, address = await start_workflowd(tmp_path / "workflowd", plane_url)
        channel = grpc.aio.insecure_channel(address)
        stub = pb_grpc.WorkflowServiceStub(channel)
        for workflow_id, name in acked.workflows.items():
            got = await stub.GetWorkflow(pb.GetWorkflowRequest(id=workflow_id))
            assert got.workflow.name == name
        for run_id, workflow_id in acked.runs.items():
            async for _ in stub.WatchRun(pb.WatchRunRequest(run_id=run_id)):
                pass
            run = (await stub.GetRun(pb.GetRunRequest(run_id=run_id))).run
            assert run.workflow_id == workflow_id
            assert run.status == pb.RUN_STATUS_COMPLETED, run.error
            jobs = await plane.jobs_for_run(run_id)
            assert [j["job_id"] for j in jobs] == [run.tasks[0].job_id]
        assert len(acked.workflows) + len(acked.runs) >= KILL_AFTER_ACKS
    finally:
        await channel.close()
        with contextlib.suppress(ProcessLookupError):
            await daemon.stop()
        await plane.aclose()
        await plane_proc.stop()
