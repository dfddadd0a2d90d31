"""The shell interface: grpcurl against the running daemon, with no proto files."""

from __future__ import annotations

import asyncio
import json

from tests.conftest import Daemon, venv_bin
from tests.specs import spec


async def grpcurl(daemon: Daemon, *args: str, body: str | None = None) -> tuple[int, str, str]:
    flags = ["-plaintext"] + (["-d", body] if body is not None else [])
    return await run_grpcurl([*flags, daemon.address, *args])


async def run_grpcurl(argv: list[str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        venv_bin("grpcurl"),
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_list_shows_the_service_and_health(daemon: Daemon) -> None:
    code, out, err = await grpcurl(daemon, "list")
    assert code == 0, err
    services = out.split()
    assert "workflowd.v1.WorkflowService" in services
    assert "grpc.health.v1.Health" in services


async def test_describe_shows_the_rpcs(daemon: Daemon) -> None:
    code, out, err = await grpcurl(daemon, "describe", "workflowd.v1.WorkflowService")
    assert code == 0, err
    for rpc in ("CreateWorkflow", "TriggerWorkflow", "WatchRun", "BackfillWorkflow"):
        assert f"rpc {rpc}" in out
    assert "stream .workflowd.v1.WatchRunResponse" in out
    code, out, err = await grpcurl(daemon, "describe", "workflowd.v1.Workflow")
    assert code == 0, err
    assert "google.protobuf.Timestamp created_at" in out


async def test_create_workflow_with_a_json_body(daemon: Daemon) -> None:
    body = json.dumps({"specification": spec(), "tags": ["from-grpcurl"]})
    code, out, err = await grpcurl(daemon, "workflowd.v1.WorkflowService/CreateWorkflow", body=body)
    assert code == 0, err
    response = json.loads(out)
    assert response["created"] is True
    assert response["workflow"]["name"] == "daily-summary"
    assert response["workflow"]["tags"] == ["from-grpcurl"]
    assert response["workflow"]["status"] == "WORKFLOW_STATUS_ACTIVE"


async def test_a_bad_spec_gets_invalid_argument_naming_the_place(daemon: Daemon) -> None:
    body = json.dumps({"specification": spec().replace("SELECT 1 AS one", "")})
    code, _, err = await grpcurl(daemon, "workflowd.v1.WorkflowService/CreateWorkflow", body=body)
    assert code != 0
    assert "InvalidArgument" in err
    assert "/do/0/build/with/nql" in err


async def test_health_check_answers_serving(daemon: Daemon) -> None:
    code, out, err = await grpcurl(daemon, "grpc.health.v1.Health/Check", body="{}")
    assert code == 0, err
    assert json.loads(out) == {"status": "SERVING"}
    code, out, err = await grpcurl(
        daemon,
        "grpc.health.v1.Health/Check",
        body=json.dumps({"service": "workflowd.v1.WorkflowService"}),
    )
    assert code == 0, err
    assert json.loads(out) == {"status": "SERVING"}


async def test_integers_stay_integers_through_the_api(daemon: Daemon) -> None:
    body = json.dumps({"specification": spec(), "trigger_immediately": True, "input": {"n": 5}})
    code, out, err = await grpcurl(daemon, "workflowd.v1.WorkflowService/CreateWorkflow", body=body)
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    code, out, err = await grpcurl(
        daemon,
        "workflowd.v1.WorkflowService/WatchRun",
        body=json.dumps({"run_id": run_id}),
    )
    assert code == 0, err
    code, out, err = await grpcurl(
        daemon, "workflowd.v1.WorkflowService/GetRun", body=json.dumps({"run_id": run_id})
    )
    assert code == 0, err
    run = json.loads(out)["run"]
    assert run["status"] == "RUN_STATUS_COMPLETED"
    assert run["input"] == {"n": 5}
    assert type(run["input"]["n"]) is int
    dataset_id = run["tasks"][0]["output"]["datasetId"]
    assert type(dataset_id) is int
    assert '"datasetId": ' + str(dataset_id) + "," in out
