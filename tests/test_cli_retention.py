"""`runs delete`, `workflows archive|unarchive|delete` and `retention set|show|apply`, as
people run them, against a real daemon."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Daemon
from tests.engine.support import finished, workflow
from tests.test_cli import cli
from workflowd.v1 import workflow_service_pb2 as pb

TASK = "  - note: {set: {done: true}}\n"


async def test_delete_a_run_then_archive_unarchive_and_delete_a_workflow(
    daemon: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(workflow("tidy", TASK))
    code, out, err = await cli("apply", "-f", str(path), "--trigger", address=daemon.address)
    assert code == 0, err
    run_id = out.splitlines()[-1].split()[1]
    await finished(daemon, run_id)

    code, out, err = await cli("runs", "delete", run_id[:8], address=daemon.address)
    assert code == 0, err
    assert out.strip() == f"run {run_id} deleted"
    code, out, err = await cli("runs", "delete", run_id, address=daemon.address)
    assert code == 1
    assert f"run {run_id} not found" in err

    code, out, err = await cli("workflows", "delete", "analytics/tidy", address=daemon.address)
    assert code == 1
    assert "is not archived: archive it with `workflowd workflows archive REF` first" in err, err
    code, out, err = await cli("workflows", "archive", "analytics/tidy", address=daemon.address)
    assert code == 0, err
    code, out, err = await cli(
        "workflows", "unarchive", "analytics/tidy", "-o", "json", address=daemon.address
    )
    assert code == 0, err
    assert json.loads(out)["status"] == "WORKFLOW_STATUS_ACTIVE"
    response = await daemon.stub.TriggerWorkflow(
        pb.TriggerWorkflowRequest(namespace="analytics", name="tidy")
    )
    await finished(daemon, response.run.id)
    code, out, err = await cli("workflows", "archive", "analytics/tidy", address=daemon.address)
    assert code == 0, err
    code, out, err = await cli("workflows", "delete", "analytics/tidy", address=daemon.address)
    assert code == 0, err
    assert out.strip() == "analytics/tidy deleted: 1 version, 1 run"
    code, out, err = await cli("workflows", "get", "analytics/tidy", address=daemon.address)
    assert code == 1
    assert "not found" in err


async def test_retention_set_show_and_apply(daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(workflow("pruned", TASK))
    code, out, err = await cli("apply", "-f", str(path), address=daemon.address)
    assert code == 0, err
    ran = []
    for _ in range(3):
        response = await daemon.stub.TriggerWorkflow(
            pb.TriggerWorkflowRequest(namespace="analytics", name="pruned")
        )
        ran.append((await finished(daemon, response.run.id)).id)

    code, out, err = await cli("retention", "show", address=daemon.address)
    assert code == 0, err
    assert out.splitlines() == ["policy: none of its own", "applies: runs kept forever (from none)"]
    code, out, err = await cli(
        "retention", "set", "--namespace", "analytics", "--keep-last", "1", "--keep-failed-for",
        "30d", address=daemon.address,
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines() == [
        "policy: failed runs kept 30d, the newest 1 of each workflow kept",
        "applies: failed runs kept 30d, the newest 1 of each workflow kept (from namespace)",
    ]
    code, out, err = await cli("retention", "show", "analytics/pruned", address=daemon.address)
    assert code == 0, err
    assert out.splitlines()[0] == "policy: none of its own"
    code, out, err = await cli(
        "retention", "set", "analytics/pruned", "--keep-for", "1d", "--keep-failed-for", "1h",
        address=daemon.address,
    )  # fmt: skip
    assert code == 1
    assert "--keep-failed-for: must be at least keep_for" in err, err

    code, out, err = await cli("retention", "apply", "--dry-run", address=daemon.address)
    assert code == 0, err
    assert out.strip() == (
        "2 runs would be deleted, 0 runs kept for active runs that need them (1 workflow with a"
        " policy)"
    )
    code, out, err = await cli(
        "retention", "apply", "analytics/pruned", "-o", "json", address=daemon.address
    )
    assert code == 0, err
    assert json.loads(out) == {"deleted_runs": "2", "workflows": 1}
    listed = await daemon.stub.ListRuns(pb.ListRunsRequest(namespace="analytics", name="pruned"))
    assert [r.id for r in listed.runs] == [ran[-1]]
    code, out, err = await cli(
        "retention", "set", "--namespace", "analytics", "--clear", address=daemon.address
    )
    assert code == 0, err
    assert out.splitlines()[1] == "applies: runs kept forever (from none)"
