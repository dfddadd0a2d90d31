"""The `workflowd` CLI as people run it: real subprocesses against a real daemon."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Daemon, venv_bin
from tests.engine.support import AUDIT_CSV, EVENTS_CSV, SLOW_NQL, Plane, wait_for_event, workflow
from tests.specs import spec
from workflowd.v1 import workflow_service_pb2 as pb


async def cli(*args: str, address: str = "", stdin: bytes | None = None) -> tuple[int, str, str]:
    env_args = ["--address", address] if address else []
    proc = await asyncio.create_subprocess_exec(
        venv_bin("workflowd"),
        *args,
        *env_args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def plane(daemon: Daemon) -> AsyncIterator[Plane]:
    plane = Plane.of(daemon)
    await plane.load_csv("events", EVENTS_CSV)
    await plane.load_csv("audit", AUDIT_CSV)
    yield plane
    await plane.aclose()


async def test_validate_works_offline_and_points_at_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec().replace("datasetName: daily_summary_view", "datasetName: 'no-dashes'"))
    code, out, _ = await cli("validate", "-f", str(bad))
    assert code == 1
    assert f"{bad}:11:9: /do/0/build/with/datasetName: " in out
    good = tmp_path / "good.yaml"
    good.write_text(spec())
    code, out, _ = await cli("validate", "-f", str(good))
    assert code == 0
    assert "valid" in out
    code, out, _ = await cli("validate", "-f", str(bad), "-o", "json")
    report = json.loads(out)
    assert code == 1
    assert report["valid"] is False
    assert report["diagnostics"][0]["line"] == 11


async def test_apply_list_get_archive(daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(spec())
    code, out, err = await cli("apply", "-f", str(path), "--tag", "cli", address=daemon.address)
    assert code == 0, err
    assert "analytics/daily-summary version 1.0.0 created" in out
    code, out, _ = await cli("apply", "-f", str(path), address=daemon.address)
    assert "unchanged" in out
    path.write_text(spec().replace("SELECT 1", "SELECT 2"))
    code, _, err = await cli("apply", "-f", str(path), address=daemon.address)
    assert code == 1
    assert "ALREADY_EXISTS" in err
    assert "bump document.version" in err

    code, out, _ = await cli("workflows", "list", "-o", "json", address=daemon.address)
    listed = json.loads(out)["workflows"]
    assert [w["name"] for w in listed] == ["daily-summary"]
    code, out, _ = await cli("workflows", "get", "analytics/daily-summary", address=daemon.address)
    assert code == 0
    assert "SELECT 1 AS one" in out
    code, out, _ = await cli(
        "workflows", "archive", "analytics/daily-summary", address=daemon.address
    )
    assert code == 0
    assert "archived" in out
    code, out, _ = await cli(
        "workflows", "list", "--status", "archived", "-o", "json", address=daemon.address
    )
    assert json.loads(out)["workflows"][0]["status"] == "WORKFLOW_STATUS_ARCHIVED"


async def test_apply_reports_spec_errors_with_places(daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(spec().replace("call: CreateMaterializedViewIfNotExists", "call: Nope"))
    code, _, err = await cli("apply", "-f", str(path), address=daemon.address)
    assert code == 1
    assert "INVALID_ARGUMENT" in err
    assert "/do/0/build/call" in err
    assert "Traceback" not in err


async def test_trigger_watch_exit_codes(daemon: Daemon, plane: Plane, tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text(spec(name="ok"))
    failing = tmp_path / "failing.yaml"
    failing.write_text(
        workflow(
            "failing",
            "  - boom:\n      call: ExecuteDml\n      with: {nql: DELETE FROM company_data.missing}\n",
        )
    )
    for path in (ok, failing):
        code, _, err = await cli("apply", "-f", str(path), address=daemon.address)
        assert code == 0, err
    code, out, err = await cli("trigger", "analytics/ok", "--watch", address=daemon.address)
    assert code == 0, err
    assert "completed" in out
    code, out, _ = await cli("trigger", "analytics/failing", "--watch", address=daemon.address)
    assert code == 1
    assert "failed" in out
    assert "missing" in out

    code, out, _ = await cli(
        "runs", "list", "--workflow", "analytics/ok", "-o", "json", address=daemon.address
    )
    runs = json.loads(out)["runs"]
    assert len(runs) == 1
    assert runs[0]["status"] == "RUN_STATUS_COMPLETED"
    code, out, _ = await cli("runs", "get", runs[0]["id"], address=daemon.address)
    assert "build" in out
    assert "completed" in out


async def test_trigger_watch_exits_2_when_cancelled(
    daemon: Daemon, plane: Plane, tmp_path: Path
) -> None:
    slow = tmp_path / "slow.yaml"
    slow.write_text(
        workflow(
            "slow",
            f'  - slow:\n      call: CreateMaterializedViewIfNotExists\n      with: {{nql: "{SLOW_NQL}", datasetName: slow_v}}\n',
        )
    )
    created = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=slow.read_text())
    )
    watcher = asyncio.create_task(
        cli(
            "trigger",
            created.workflow.id,
            "--watch",
            "--idempotency-key",
            "k1",
            address=daemon.address,
        )
    )
    run = (
        await daemon.stub.TriggerWorkflow(
            pb.TriggerWorkflowRequest(workflow_id=created.workflow.id, idempotency_key="k1")
        )
    ).run
    await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED)
    code, out, _ = await cli("runs", "cancel", run.id, address=daemon.address)
    assert code == 0
    code, out, _ = await watcher
    assert code == 2
    assert "cancelled" in out


async def test_unreachable_daemon_is_one_clear_line(tmp_path: Path) -> None:
    code, _, err = await cli("workflows", "list", address="127.0.0.1:1")
    assert code == 1
    assert "UNAVAILABLE" in err
    assert "Traceback" not in err
