"""Companies and tokens on a real daemon: no token, a wrong token or a revoked one is
UNAUTHENTICATED on every RPC; one company's token on another's objects is NOT_FOUND, in every
RPC, streams included, and lists show only the caller's; health and reflection need no token."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import Daemon, eventually, subprocess_env, venv_bin
from tests.engine.schedule_support import scheduled
from workflowd.api.tokens import sha256_hex
from workflowd.v1 import workflow_service_pb2 as pb

TOKENS = {"tok-acme": ("acme", "acme-ci"), "tok-globex": ("globex", "globex-ci")}


def tokens_file(path: Path, tokens: dict[str, tuple[str, str]]) -> Path:
    lines = []
    for token, (company, name) in tokens.items():
        lines += ["[[tokens]]", f'company = "{company}"', f'name = "{name}"']
        lines += [f'sha256 = "{sha256_hex(token)}"', ""]
    path.write_text("\n".join(lines))
    return path


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


ACME, GLOBEX = bearer("tok-acme"), bearer("tok-globex")


@pytest.fixture
async def daemon(start_daemon: Callable[..., Awaitable[Daemon]], tmp_path: Path) -> Daemon:
    return await start_daemon(tokens_file=str(tokens_file(tmp_path / "tokens.toml", TOKENS)))


async def owned(daemon: Daemon, who: tuple[tuple[str, str], ...], name: str) -> dict[str, str]:
    """A scheduled workflow and a completed run of it, owned by `who`."""
    view = name.replace("-", "_")
    task = (
        "  - view:\n      call: CreateMaterializedViewIfNotExists\n"
        f"      with: {{nql: SELECT 1 AS one, datasetName: {view}}}\n"
    )
    text = scheduled(name, "{cron: '@daily'}", task)
    created = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=text, trigger_immediately=True),
        metadata=who,
    )
    await daemon.stub.ScheduleWorkflow(
        pb.ScheduleWorkflowRequest(workflow_id=created.workflow.id), metadata=who
    )
    async for _ in daemon.stub.WatchRun(pb.WatchRunRequest(run_id=created.run_id), metadata=who):
        pass
    return {"workflow": created.workflow.id, "run": created.run_id, "name": name}


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def requests_on(objects: dict[str, str]) -> list[tuple[str, Any]]:
    """One request per RPC, naming the objects of `objects`."""
    wf, run, name = objects["workflow"], objects["run"], objects["name"]
    day = datetime.now(UTC) - timedelta(days=3)
    return [
        ("GetWorkflow", pb.GetWorkflowRequest(id=wf)),
        ("GetWorkflow", pb.GetWorkflowRequest(namespace="analytics", name=name)),
        ("ArchiveWorkflow", pb.ArchiveWorkflowRequest(id=wf)),
        ("TriggerWorkflow", pb.TriggerWorkflowRequest(workflow_id=wf)),
        ("TriggerWorkflow", pb.TriggerWorkflowRequest(namespace="analytics", name=name)),
        ("GetRun", pb.GetRunRequest(run_id=run)),
        ("CancelRun", pb.CancelRunRequest(run_id=run)),
        ("RerunRun", pb.RerunRunRequest(run_id=run, start="start")),
        ("ScheduleWorkflow", pb.ScheduleWorkflowRequest(workflow_id=wf)),
        ("UnscheduleWorkflow", pb.UnscheduleWorkflowRequest(workflow_id=wf)),
        ("GetSchedule", pb.GetScheduleRequest(workflow_id=wf)),
        (
            "BackfillWorkflow",
            pb.BackfillWorkflowRequest(
                workflow_id=wf, start_time=ts(day), end_time=ts(day + timedelta(days=1))
            ),
        ),
        ("WatchRun", pb.WatchRunRequest(run_id=run)),
        # The same, naming the workflow by namespace and name, or by the newer field name.
        ("GetWorkflow", pb.GetWorkflowRequest(workflow_id=wf)),
        ("ArchiveWorkflow", pb.ArchiveWorkflowRequest(workflow_id=wf)),
        ("ArchiveWorkflow", pb.ArchiveWorkflowRequest(namespace="analytics", name=name)),
        ("ScheduleWorkflow", pb.ScheduleWorkflowRequest(namespace="analytics", name=name)),
        ("UnscheduleWorkflow", pb.UnscheduleWorkflowRequest(namespace="analytics", name=name)),
        ("GetSchedule", pb.GetScheduleRequest(namespace="analytics", name=name)),
        (
            "BackfillWorkflow",
            pb.BackfillWorkflowRequest(
                namespace="analytics",
                name=name,
                start_time=ts(day),
                end_time=ts(day + timedelta(days=1)),
            ),
        ),
        ("ListRuns", pb.ListRunsRequest(namespace="analytics", name=name)),
        ("WatchRuns", pb.WatchRunsRequest(namespace="analytics", name=name)),
        ("DeleteRun", pb.DeleteRunRequest(run_id=run)),
        ("UnarchiveWorkflow", pb.UnarchiveWorkflowRequest(workflow_id=wf)),
        ("UnarchiveWorkflow", pb.UnarchiveWorkflowRequest(namespace="analytics", name=name)),
        ("DeleteWorkflow", pb.DeleteWorkflowRequest(workflow_id=wf)),
        ("DeleteWorkflow", pb.DeleteWorkflowRequest(namespace="analytics", name=name)),
        (
            "SetRetentionPolicy",
            pb.SetRetentionPolicyRequest(workflow_id=wf, policy=pb.RetentionPolicy(keep_last=1)),
        ),
        ("SetRetentionPolicy", pb.SetRetentionPolicyRequest(namespace="analytics", name=name)),
        ("GetRetentionPolicy", pb.GetRetentionPolicyRequest(workflow_id=wf)),
        ("GetRetentionPolicy", pb.GetRetentionPolicyRequest(namespace="analytics", name=name)),
        ("ApplyRetention", pb.ApplyRetentionRequest(workflow_id=wf)),
        ("ApplyRetention", pb.ApplyRetentionRequest(namespace="analytics", name=name)),
    ]


async def call(daemon: Daemon, rpc: str, request: Any, metadata: Any) -> Any:
    method = getattr(daemon.stub, rpc)
    if rpc.startswith("Watch"):
        return [r async for r in method(request, metadata=metadata)]
    return await method(request, metadata=metadata)


async def test_one_companys_token_finds_nothing_of_another_company(daemon: Daemon) -> None:
    theirs = await owned(daemon, GLOBEX, "globex-secret")
    await owned(daemon, ACME, "acme-own")
    nobody = {"workflow": str(uuid.uuid4()), "run": str(uuid.uuid4()), "name": "nobody-here"}
    for (rpc, request), (_, absent) in zip(requests_on(theirs), requests_on(nobody), strict=True):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(daemon, rpc, request, ACME)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, (rpc, info.value.details())
        # The answer is the one for an object that exists nowhere: it reveals nothing.
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await call(daemon, rpc, absent, ACME)
        said = info.value.details() or ""
        for key in ("workflow", "run", "name"):
            said = said.replace(theirs[key], nobody[key])
        assert said == other.value.details(), rpc
    # Lists show only the caller's own.
    workflows = await daemon.stub.ListWorkflows(pb.ListWorkflowsRequest(), metadata=ACME)
    assert [w.name for w in workflows.workflows] == ["acme-own"]
    runs = await daemon.stub.ListRuns(pb.ListRunsRequest(), metadata=ACME)
    assert {r.name for r in runs.runs} == {"acme-own"}
    mine = await daemon.stub.ListRuns(
        pb.ListRunsRequest(workflow_id=theirs["workflow"]), metadata=ACME
    )
    assert list(mine.runs) == []
    # A run id's start finds only the caller's runs, as a whole id does.
    prefix = theirs["run"][:8]
    found = await daemon.stub.ListRuns(pb.ListRunsRequest(run_id_prefix=prefix), metadata=ACME)
    assert list(found.runs) == []
    found = await daemon.stub.ListRuns(pb.ListRunsRequest(run_id_prefix=prefix), metadata=GLOBEX)
    assert [r.id for r in found.runs] == [theirs["run"]]
    schedules = await daemon.stub.ListSchedules(pb.ListSchedulesRequest(), metadata=ACME)
    assert [s.name for s in schedules.schedules] == ["acme-own"]
    # Nothing of theirs was changed by the attempts.
    sched = await daemon.stub.GetSchedule(
        pb.GetScheduleRequest(workflow_id=theirs["workflow"]), metadata=GLOBEX
    )
    assert sched.schedule.active
    got = await daemon.stub.GetRun(pb.GetRunRequest(run_id=theirs["run"]), metadata=GLOBEX)
    assert got.run.status == pb.RUN_STATUS_COMPLETED
    workflow = await daemon.stub.GetWorkflow(
        pb.GetWorkflowRequest(workflow_id=theirs["workflow"]), metadata=GLOBEX
    )
    assert workflow.workflow.status == pb.WORKFLOW_STATUS_ACTIVE
    # A namespace's policy and a pass over the caller's own workflows touch nothing of theirs.
    await daemon.stub.SetRetentionPolicy(
        pb.SetRetentionPolicyRequest(namespace="analytics", policy=pb.RetentionPolicy(keep_last=1)),
        metadata=ACME,
    )
    await daemon.stub.ApplyRetention(pb.ApplyRetentionRequest(), metadata=ACME)
    theirs_policy = await daemon.stub.GetRetentionPolicy(
        pb.GetRetentionPolicyRequest(namespace="analytics"), metadata=GLOBEX
    )
    assert theirs_policy.source == pb.RETENTION_SOURCE_NONE
    got = await daemon.stub.GetRun(pb.GetRunRequest(run_id=theirs["run"]), metadata=GLOBEX)
    assert got.run.id == theirs["run"]


async def test_watch_runs_shows_only_the_callers_events(daemon: Daemon) -> None:
    await owned(daemon, ACME, "acme-watched")
    stream = daemon.stub.WatchRuns(pb.WatchRunsRequest(), metadata=ACME)
    await stream.wait_for_connection()
    theirs = await owned(daemon, GLOBEX, "globex-hidden")
    mine = await owned(daemon, ACME, "acme-second")
    seen = []
    async for response in stream:
        seen.append(response.event.run_id)
        if (
            response.event.run_id == mine["run"]
            and response.event.type == pb.RUN_EVENT_TYPE_RUN_COMPLETED
        ):
            break
    stream.cancel()
    assert theirs["run"] not in seen
    assert mine["run"] in seen


@pytest.mark.parametrize("metadata", [(), bearer("tok-nobody"), (("authorization", "tok-acme"),)])
async def test_every_rpc_without_a_valid_token_is_unauthenticated(
    daemon: Daemon, metadata: Any
) -> None:
    objects = await owned(daemon, ACME, "acme-guarded")
    everything = [
        ("ValidateWorkflow", pb.ValidateWorkflowRequest(specification="x")),
        ("CreateWorkflow", pb.CreateWorkflowRequest(specification="x")),
        ("ListWorkflows", pb.ListWorkflowsRequest()),
        ("ListRuns", pb.ListRunsRequest()),
        ("ListSchedules", pb.ListSchedulesRequest()),
        ("ListDeliveries", pb.ListDeliveriesRequest()),
        ("WatchRuns", pb.WatchRunsRequest()),
        ("WatchRun", pb.WatchRunRequest(run_id=objects["run"], after_seq=-5)),
        *requests_on(objects),
    ]
    called = {rpc for rpc, _ in everything}
    assert called == set(pb.DESCRIPTOR.services_by_name["WorkflowService"].methods_by_name)
    for rpc, request in everything:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(daemon, rpc, request, metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, rpc
        assert "authorization: Bearer <token>" in (info.value.details() or "")


async def test_health_and_reflection_answer_without_a_token(daemon: Daemon) -> None:
    health = health_pb2_grpc.HealthStub(daemon.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(daemon.channel)
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = [s.name async for reply in replies for s in reply.list_services_response.service]
    assert "workflowd.v1.WorkflowService" in names


async def drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def test_a_revoked_token_stops_working_and_ends_its_open_streams(
    daemon: Daemon, tmp_path: Path
) -> None:
    objects = await owned(daemon, ACME, "acme-revoked")
    watch = daemon.stub.WatchRuns(pb.WatchRunsRequest(), metadata=ACME)
    await watch.wait_for_connection()
    others = daemon.stub.WatchRuns(pb.WatchRunsRequest(), metadata=GLOBEX)
    await others.wait_for_connection()
    tokens_file(tmp_path / "tokens.toml", {"tok-globex": TOKENS["tok-globex"]})
    assert await daemon.app.reload_tokens()  # what SIGHUP does

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(drain(watch), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.GetRun(pb.GetRunRequest(run_id=objects["run"]), metadata=ACME)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The other company's token and stream carry on.
    still = await owned(daemon, GLOBEX, "globex-still")
    async with asyncio.timeout(10):
        async for response in others:
            if response.event.run_id == still["run"]:
                break
    others.cancel()


async def plane_get(daemon: Daemon, path: str, token: str, **headers: str) -> tuple[int, Any]:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(daemon.jobs_url) as session,
        session.get(path, headers={**auth, **headers}) as resp,
    ):
        return resp.status, await resp.json()


async def test_each_company_has_its_own_data_in_the_embedded_data_plane(daemon: Daemon) -> None:
    # Both companies build a dataset of the same name: each in its own database.
    acme = await owned(daemon, ACME, "same-name")
    globex = await owned(daemon, GLOBEX, "same-name")
    for token, mine, theirs in (("tok-acme", acme, globex), ("tok-globex", globex, acme)):
        status, jobs = await plane_get(daemon, "/jobs", token)
        assert status == 200
        runs = {job["metadata"]["workflow_run_id"] for job in jobs["records"]}
        assert runs == {mine["run"]}, token
        assert theirs["run"] not in runs
        status, datasets = await plane_get(daemon, "/datasets", token)
        assert status == 200
        assert [d["dataset_name"] for d in datasets["records"]] == ["same_name"]
    # A company's token cannot act for another company; no token gets nothing.
    status, _ = await plane_get(daemon, "/jobs", "tok-acme", **{"X-Workflowd-Company": "globex"})
    assert status == 403
    status, _ = await plane_get(daemon, "/jobs", "")
    assert status == 401


async def test_a_token_revoked_by_reload_stops_working_on_the_data_plane(
    daemon: Daemon, tmp_path: Path
) -> None:
    await owned(daemon, ACME, "acme-data")
    assert (await plane_get(daemon, "/datasets", "tok-acme"))[0] == 200
    tokens_file(tmp_path / "tokens.toml", {"tok-globex": TOKENS["tok-globex"]})
    assert await daemon.app.reload_tokens()  # what SIGHUP does; the data plane is told in turn

    async def refused() -> bool:
        return (await plane_get(daemon, "/datasets", "tok-acme"))[0] == 401

    await eventually(refused)
    # The daemon's own calls to the data plane go on, for the companies that remain.
    still = await owned(daemon, GLOBEX, "globex-after")
    got = await daemon.stub.GetRun(pb.GetRunRequest(run_id=still["run"]), metadata=GLOBEX)
    assert got.run.status == pb.RUN_STATUS_COMPLETED


async def test_the_cli_presents_its_token_from_the_environment_a_file_or_a_flag(
    daemon: Daemon, tmp_path: Path
) -> None:
    await owned(daemon, ACME, "acme-listed")
    await owned(daemon, GLOBEX, "globex-unlisted")
    token_file = tmp_path / "acme.token"
    token_file.write_text("tok-acme\n")

    async def workflows_list(*flags: str, **env: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            venv_bin("workflowd"), "workflows", "list", "--address", daemon.address, *flags,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=subprocess_env(**{"WORKFLOWD_TOKEN": "", **env}),
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    for flags, env in (
        ((), {"WORKFLOWD_TOKEN": "tok-acme"}),
        (("--token-file", str(token_file)), {}),
        (("--token", "tok-acme"), {}),
    ):
        code, out, err = await workflows_list(*flags, **env)
        assert code == 0, err
        assert "acme-listed" in out
        assert "globex-unlisted" not in out
    code, out, err = await workflows_list()
    assert code == 1
    assert out == ""
    assert err.startswith("workflowd: UNAUTHENTICATED: ")
    assert "Traceback" not in err
