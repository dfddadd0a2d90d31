"""Webhooks across kill -9 of the daemon (a real subprocess): notices committed while the
receiver was down are delivered once it is back, by the next daemon; a delivery cut short by the
kill (sent, its answer never recorded) is sent again under the same delivery id, so a receiver
that deduplicates hears every notice exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.conftest import eventually
from tests.procs import Process, start_dataplane, start_workflowd
from tests.webhooks import COMPLETES, FAILS, Receiver, write_config
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow


class Stack:
    def __init__(self, tmp: Path, plane: Process, plane_url: str, config: Path) -> None:
        self.tmp = tmp
        self.plane = plane
        self.plane_url = plane_url
        self.config = config
        self.daemon: Process | None = None
        self.channel: grpc.aio.Channel | None = None

    async def start(self) -> pb_grpc.WorkflowServiceStub:
        if self.channel is not None:
            await self.channel.close()
        self.daemon, address = await start_workflowd(
            self.tmp / "workflowd", self.plane_url, extra=("--config", str(self.config))
        )
        self.channel = grpc.aio.insecure_channel(address)
        return pb_grpc.WorkflowServiceStub(self.channel)

    async def aclose(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.daemon is not None:
            await self.daemon.stop()
        await self.plane.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    await hook.up()
    yield hook
    await hook.down()


@pytest.fixture
async def stack(tmp_path: Path, receiver: Receiver) -> AsyncIterator[Stack]:
    config = write_config(
        tmp_path / "workflowd.toml",
        receiver.url,
        ["run_completed", "run_failed"],
        extra="max_concurrent = 1",
        destination="timeout_s = 60",
    )
    plane, url = await start_dataplane(tmp_path / "plane")
    stack = Stack(tmp_path, plane, url, config)
    yield stack
    await stack.aclose()


async def ended_run(stub: pb_grpc.WorkflowServiceStub, spec: str, name: str) -> str:
    created = await stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=spec.format(name=name))
    )
    run = (
        await stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=created.workflow.id))
    ).run

    async def ended() -> bool:
        got = await stub.GetRun(pb.GetRunRequest(run_id=run.id))
        return got.run.status in (pb.RUN_STATUS_COMPLETED, pb.RUN_STATUS_FAILED)

    await eventually(ended)
    return run.id


async def listed(stub: pb_grpc.WorkflowServiceStub) -> list[pb.Delivery]:
    reply = await stub.ListDeliveries(pb.ListDeliveriesRequest(page_size=1000))
    return list(reply.deliveries)


async def test_notices_outlive_kill_9_and_arrive_once_each(
    stack: Stack, receiver: Receiver
) -> None:
    # Phase 1: the receiver is down; the notices wait in the outbox, tried again and again.
    await receiver.down()
    stub = await stack.start()
    runs = [await ended_run(stub, COMPLETES, f"nightly-{i}") for i in range(3)]
    runs.append(await ended_run(stub, FAILS, "broken"))

    async def retried() -> bool:
        found = await listed(stub)
        return len(found) == 4 and all(d.attempts >= 2 for d in found)

    await eventually(retried)
    assert stack.daemon is not None
    await stack.daemon.kill9()

    # Phase 2: the receiver is back but hangs on the first notice; the daemon dies while that
    # delivery is in flight, so its answer is never recorded.
    receiver.hang = True
    await receiver.up()
    stub = await stack.start()
    await receiver.arrived.wait()
    assert stack.daemon is not None
    await stack.daemon.kill9()
    receiver.hang = False
    receiver.release.set()

    # Phase 3: the next daemon delivers everything, the cut-short delivery again.
    stub = await stack.start()
    runs.append(await ended_run(stub, COMPLETES, "after-restart"))

    async def all_delivered() -> list[pb.Delivery]:
        found = await listed(stub)
        done = all(d.status == pb.DELIVERY_STATUS_DELIVERED for d in found)
        return found if len(found) == 5 and done else []

    delivered = await eventually(all_delivered, timeout_s=30)
    unique = receiver.unique()
    assert set(unique) == {d.delivery_id for d in delivered}
    assert sorted(r.body["run"] for r in unique.values()) == sorted(runs)
    assert all(r.signed for r in receiver.received)
    # Only the delivery in flight at the kill reached the receiver twice, with the same id.
    assert sorted(receiver.counts().values()) == [1, 1, 1, 1, 2]
