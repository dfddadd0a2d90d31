"""`apply` of many files and directories, and export that round-trips, as people run them:
real subprocesses against a real daemon."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Daemon
from tests.specs import spec
from tests.test_cli import cli
from workflowd.v1 import workflow_service_pb2 as pb

BAD_CALL = spec(name="broken").replace("call: CreateMaterializedViewIfNotExists", "call: Nope")


async def test_apply_takes_every_file_given(daemon: Daemon, tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(spec(name="first"))
    b.write_text(spec(name="second"))
    code, out, err = await cli("apply", "-f", str(a), "-f", str(b), address=daemon.address)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{a}: analytics/first version 1.0.0 created (id ")
    assert lines[1].startswith(f"{b}: analytics/second version 1.0.0 created (id ")
    listed = await daemon.stub.ListWorkflows(pb.ListWorkflowsRequest())
    assert {w.name for w in listed.workflows} == {"first", "second"}


async def test_apply_of_a_directory_reports_each_file_and_fails_if_one_did(
    daemon: Daemon, tmp_path: Path
) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "a.yaml").write_text(spec(name="first"))
    (folder / "b.yml").write_text(BAD_CALL)
    (folder / "c.yaml").write_text(spec(name="third"))
    (folder / "notes.txt").write_text("not a workflow")
    code, out, err = await cli("apply", "-f", str(folder), address=daemon.address)
    assert code == 1
    assert [line.split(":")[0] for line in out.splitlines()] == [
        str(folder / "a.yaml"),
        str(folder / "c.yaml"),
    ]
    bad = folder / "b.yml"
    # The refusal reads as `validate` prints it: file:line:col: pointer: message.
    code_v, validated, _ = await cli("validate", "-f", str(bad))
    assert code_v == 1
    problem = validated.splitlines()[0]
    assert problem.startswith(f"{bad}:8:7: /do/0/build/call: ")
    assert err.splitlines() == [
        f"workflowd: {bad}: INVALID_ARGUMENT: the specification has 1 problem",
        problem,
        f"workflowd: 1 of 3 files not applied: {bad}",
    ]
    listed = await daemon.stub.ListWorkflows(pb.ListWorkflowsRequest())
    assert {w.name for w in listed.workflows} == {"first", "third"}


async def test_apply_refusals_that_are_not_the_specification(
    daemon: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(spec())
    code, _, err = await cli("apply", "-f", str(path), address=daemon.address)
    assert code == 0, err
    path.write_text(spec().replace("SELECT 1", "SELECT 2"))
    missing = tmp_path / "missing.yaml"
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = await cli("apply", "-f", str(path), "-f", str(missing), address=daemon.address)
    assert code == 1
    lines = err.splitlines()
    assert lines[0].startswith(f"workflowd: {path}: ALREADY_EXISTS: workflow ")
    assert "bump document.version" in lines[0]
    assert lines[1] == f"workflowd: {missing}: cannot read it: No such file or directory"
    assert lines[2] == f"workflowd: 2 of 2 files not applied: {path}, {missing}"
    code, _, err = await cli("apply", "-f", str(empty), address=daemon.address)
    assert code == 1
    assert err == f"workflowd: {empty}: the directory holds no *.yaml or *.yml file\n"


async def test_validate_takes_files_and_directories_too(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(spec())
    (tmp_path / "bad.yaml").write_text(BAD_CALL)
    code, out, _ = await cli("validate", "-f", str(tmp_path))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'bad.yaml'}:8:7: /do/0/build/call: ")
    assert lines[1] == f"{tmp_path / 'good.yaml'}: valid"
    code, out, _ = await cli("validate", "-f", str(tmp_path), "-o", "json")
    reports = [json.loads(line) for line in out.splitlines()]
    assert [(r["file"], r["valid"]) for r in reports] == [
        (str(tmp_path / "bad.yaml"), False),
        (str(tmp_path / "good.yaml"), True),
    ]


async def test_export_prints_the_stored_specification_exactly(
    daemon: Daemon, tmp_path: Path
) -> None:
    text = "# nightly numbers\n" + spec() + "# the end, without a newline"
    original = tmp_path / "wf.yaml"
    original.write_text(text)
    code, _, err = await cli("apply", "-f", str(original), address=daemon.address)
    assert code == 0, err
    for args in (("workflows", "get", "analytics/daily-summary", "-o", "yaml"),
                 ("workflows", "export", "analytics/daily-summary")):  # fmt: skip
        code, out, err = await cli(*args, address=daemon.address)
        assert code == 0, err
        assert out == text
    exported = tmp_path / "exported.yaml"
    exported.write_text(out)
    code, out, _ = await cli("validate", "-f", str(exported))
    assert code == 0, out
    code, out, err = await cli("apply", "-f", str(exported), address=daemon.address)
    assert code == 0, err
    assert "version 1.0.0 unchanged" in out


async def test_export_all_writes_a_file_per_workflow_that_apply_reads_back(
    daemon: Daemon, start_daemon: object, tmp_path: Path
) -> None:
    texts = {
        "analytics.first.yaml": spec(name="first"),
        "finance.second.yaml": spec(name="second", namespace="finance"),
    }
    for text in texts.values():
        await daemon.stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=text))
    archived = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=spec(name="old"))
    )
    await daemon.stub.ArchiveWorkflow(pb.ArchiveWorkflowRequest(workflow_id=archived.workflow.id))
    folder = tmp_path / "backup"
    code, out, err = await cli("workflows", "export", "--all", str(folder), address=daemon.address)
    assert code == 0, err
    assert out.splitlines()[-1] == f"2 workflows exported to {folder}"
    assert {p.name: p.read_text() for p in folder.iterdir()} == texts
    # Applied again, nothing changes; applied to another daemon, the same workflows exist.
    code, out, err = await cli("apply", "-f", str(folder), address=daemon.address)
    assert code == 0, err
    assert out.count(" unchanged (id ") == 2
    fresh = await start_daemon()  # type: ignore[operator]
    code, out, err = await cli("apply", "-f", str(folder), "-o", "json", address=fresh.address)
    assert code == 0, err
    created = [json.loads(line) for line in out.splitlines()]
    assert sorted(c["workflow"]["name"] for c in created) == ["first", "second"]
    assert sorted(c["file"] for c in created) == sorted(str(folder / name) for name in texts)
    assert all(c["created"] for c in created)
    code, out, _ = await cli(
        "workflows", "export", "--all", str(tmp_path / "ns"), "--namespace", "finance",
        address=daemon.address,
    )  # fmt: skip
    assert code == 0
    assert [p.name for p in (tmp_path / "ns").iterdir()] == ["finance.second.yaml"]
