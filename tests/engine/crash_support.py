"""A daemon that may be killed with -9 and started again (a real subprocess), beside a data
plane that is never killed (another one), for the crash tests."""

from __future__ import annotations

from pathlib import Path

import grpc

from tests.engine.support import Plane
from tests.procs import Process, start_workflowd
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc


class Stack:
    def __init__(self, tmp: Path, plane_proc: Process, plane_url: str) -> None:
        self.tmp = tmp
        self.plane_proc = plane_proc
        self.plane = Plane(plane_url)
        self.daemon: Process | None = None
        self.channel: grpc.aio.Channel | None = None
        self.stub: pb_grpc.WorkflowServiceStub | None = None

    async def start_daemon(self, crash_point: str = "") -> pb_grpc.WorkflowServiceStub:
        if self.channel is not None:
            await self.channel.close()
        self.daemon, address = await start_workflowd(
            self.tmp / "workflowd", self.plane.base_url, crash_point
        )
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = pb_grpc.WorkflowServiceStub(self.channel)
        return self.stub

    async def aclose(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.daemon is not None:
            await self.daemon.stop()
        await self.plane.aclose()
        await self.plane_proc.stop()


async def run_to_end(stub: pb_grpc.WorkflowServiceStub, run_id: str) -> pb.Run:
    async for _ in stub.WatchRun(pb.WatchRunRequest(run_id=run_id)):
        pass
    return (await stub.GetRun(pb.GetRunRequest(run_id=run_id))).run
