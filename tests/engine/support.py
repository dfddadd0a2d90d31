"""Helpers for run tests: the data plane over HTTP, and waiting on runs through WatchRun."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from google.protobuf import json_format, struct_pb2

from tests.conftest import Daemon, eventually
from workflowd.v1 import workflow_service_pb2 as pb

EVENTS_CSV = (
    "event_id,user_id,event_type,amount\n"
    "1,u1,click,1.5\n2,u1,buy,20.0\n3,u2,click,0.5\n4,u3,click,0.7\n5,u3,buy,9.0\n6,u3,click,0.2\n"
)
AUDIT_CSV = "dataset_id,row_count,note\n0,0,seed\n"
TERMINAL = {pb.RUN_STATUS_COMPLETED, pb.RUN_STATUS_FAILED, pb.RUN_STATUS_CANCELLED}


class Plane:
    """The data plane's HTTP API, as a person or another service would use it."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url
        self.session = aiohttp.ClientSession(base_url, headers=headers)

    @classmethod
    def of(cls, daemon: Daemon) -> Plane:
        """The data plane of `daemon`, as its company there."""
        return cls(daemon.jobs_url, daemon.plane_headers)

    async def aclose(self) -> None:
        await self.session.close()

    async def load_csv(self, name: str, text: str) -> dict[str, Any]:
        async with self.session.post(
            f"/datasets/{name}/load", params={"format": "csv"}, data=text.encode()
        ) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()  # type: ignore[no-any-return]

    async def rows(self, name: str, limit: int = 1000) -> list[dict[str, Any]]:
        async with self.session.get(f"/datasets/{name}/sample", params={"limit": limit}) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        columns = body["columns"]
        names = [c["name"] if isinstance(c, dict) else c for c in columns]
        return [dict(zip(names, row, strict=True)) for row in body["rows"]]

    async def jobs_for_run(self, run_id: str) -> list[dict[str, Any]]:
        async with self.session.get(
            "/jobs", params={"workflow_run_id": run_id, "per_page": 500}
        ) as resp:
            assert resp.status == 200, await resp.text()
            return (await resp.json())["records"]  # type: ignore[no-any-return]

    async def job(self, job_id: str) -> dict[str, Any]:
        async with self.session.get(f"/jobs/{job_id}") as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()  # type: ignore[no-any-return]


async def apply(daemon: Daemon, text: str) -> pb.Workflow:
    response = await daemon.stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=text))
    return response.workflow


async def trigger(daemon: Daemon, workflow_id: str, **fields: Any) -> pb.Run:
    response = await daemon.stub.TriggerWorkflow(
        pb.TriggerWorkflowRequest(workflow_id=workflow_id, **fields)
    )
    return response.run


async def events_until_end(daemon: Daemon, run_id: str, after_seq: int = 0) -> list[pb.RunEvent]:
    events = []
    async with asyncio.timeout(60):
        async for response in daemon.stub.WatchRun(
            pb.WatchRunRequest(run_id=run_id, after_seq=after_seq)
        ):
            events.append(response.event)
    return events


async def finished(daemon: Daemon, run_id: str) -> pb.Run:
    events = await events_until_end(daemon, run_id)
    assert events[-1].run_status in TERMINAL
    return (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run_id))).run


async def wait_for_event(
    daemon: Daemon, run_id: str, kind: int, task_index: int | None = None
) -> pb.RunEvent:
    call = daemon.stub.WatchRun(pb.WatchRunRequest(run_id=run_id))
    try:
        async with asyncio.timeout(60):
            async for response in call:
                event = response.event
                if event.type == kind and (task_index is None or event.task_index == task_index):
                    return event
    finally:
        call.cancel()  # the stream is left before its end: release it on the server too
    raise AssertionError(f"run {run_id} ended without event {kind}")


def workflow(name: str, tasks: str, version: str = "1.0.0", extra: str = "") -> str:
    return (
        f"document: {{dsl: '1.0.0', namespace: analytics, name: {name}, version: '{version}'}}\n"
        f"{extra}do:\n{tasks}"
    )


SLOW_NQL = (
    "SELECT a.range AS x, sum(hash(a.range * b.range)) AS h "
    "FROM range(300000) a, range(300000) b GROUP BY a.range"
)


def jv(data: Any) -> struct_pb2.Value:
    """A JSON value as a protobuf Value (run inputs)."""
    return json_format.ParseDict(data, struct_pb2.Value())


async def occupy_workers(plane: Plane, count: int) -> list[str]:
    """Jobs submitted straight to the data plane (untagged) that hold its workers busy."""
    ids = []
    for i in range(count):
        body = {"type": "materialize-view", "input": {"nql": SLOW_NQL, "dataset_name": f"b{i}"}}
        async with plane.session.post("/jobs", json=body) as resp:
            assert resp.status == 201, await resp.text()
            ids.append((await resp.json())["job_id"])

    async def running() -> bool:
        states = [(await plane.job(job_id))["state"] for job_id in ids]
        return states == ["running"] * count

    await eventually(running)
    return ids
