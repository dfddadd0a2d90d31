"""The definition RPCs through a real server on a loopback port."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.conftest import Daemon
from tests.specs import spec
from workflowd.v1 import workflow_service_pb2 as pb


async def create(daemon: Daemon, text: str, *tags: str) -> pb.CreateWorkflowResponse:
    return await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=text, tags=list(tags))
    )


async def expect_error(call: object, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    return info.value


async def test_create_is_idempotent_and_versions_accumulate(daemon: Daemon) -> None:
    first = await create(daemon, spec(version="1.0.0"), "nightly")
    assert first.created
    assert first.workflow.namespace == "analytics"
    assert first.workflow.name == "daily-summary"
    assert first.workflow.version == "1.0.0"
    assert list(first.workflow.tags) == ["nightly"]
    assert first.workflow.status == pb.WORKFLOW_STATUS_ACTIVE
    assert first.run_id == ""

    again = await create(daemon, spec(version="1.0.0"))
    assert not again.created
    assert again.workflow.id == first.workflow.id

    second = await create(daemon, spec(version="1.1.0", tasks=None).replace("SELECT 1", "SELECT 2"))
    assert second.created
    assert second.workflow.id == first.workflow.id
    assert second.workflow.version == "1.1.0"
    assert list(second.workflow.versions) == ["1.0.0", "1.1.0"]
    assert second.workflow.current_version == "1.1.0"


async def test_changed_spec_under_existing_version_is_already_exists(daemon: Daemon) -> None:
    await create(daemon, spec(version="1.0.0"))
    changed = spec(version="1.0.0").replace("SELECT 1", "SELECT 42")
    err = await expect_error(create(daemon, changed), grpc.StatusCode.ALREADY_EXISTS)
    assert "bump document.version" in (err.details() or "")
    got = await daemon.stub.GetWorkflow(
        pb.GetWorkflowRequest(namespace="analytics", name="daily-summary")
    )
    assert "SELECT 1 AS one" in got.workflow.specification


async def test_get_by_id_by_name_and_by_version(daemon: Daemon) -> None:
    v1 = (await create(daemon, spec(version="1.0.0"))).workflow
    await create(daemon, spec(version="2.0.0").replace("SELECT 1", "SELECT 2"))
    by_id = (await daemon.stub.GetWorkflow(pb.GetWorkflowRequest(id=v1.id))).workflow
    assert by_id.version == "2.0.0"
    assert "SELECT 2" in by_id.specification
    by_name = (
        await daemon.stub.GetWorkflow(
            pb.GetWorkflowRequest(namespace="analytics", name="daily-summary", version="1.0.0")
        )
    ).workflow
    assert by_name.id == v1.id
    assert by_name.version == "1.0.0"
    assert "SELECT 1 AS one" in by_name.specification
    await expect_error(
        daemon.stub.GetWorkflow(pb.GetWorkflowRequest(id=v1.id, version="9.9.9")),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        daemon.stub.GetWorkflow(pb.GetWorkflowRequest(namespace="analytics", name="nope")),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        daemon.stub.GetWorkflow(pb.GetWorkflowRequest(namespace="analytics")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_list_pages_through_many_workflows_stably(daemon: Daemon) -> None:
    created = []
    for i in range(260):
        tag = "even" if i % 2 == 0 else "odd"
        created.append((await create(daemon, spec(name=f"wf-{i:03d}"), tag)).workflow.id)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await daemon.stub.ListWorkflows(
            pb.ListWorkflowsRequest(page_size=100, page_token=token)
        )
        seen += [w.id for w in page.workflows]
        pages += 1
        if pages == 1:
            # An insert between pages must not shift what the next pages return.
            await create(daemon, spec(name="late-arrival"))
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == list(reversed(created))

    evens = await daemon.stub.ListWorkflows(pb.ListWorkflowsRequest(tag="even", page_size=1000))
    assert len(evens.workflows) == 130
    assert all("even" in w.tags for w in evens.workflows)

    err = await expect_error(
        daemon.stub.ListWorkflows(pb.ListWorkflowsRequest(page_token="garbage!")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "page_token" in (err.details() or "")


async def test_archive_refuses_new_versions_and_runs_but_keeps_history(daemon: Daemon) -> None:
    workflow = (await create(daemon, spec())).workflow
    archived = (
        await daemon.stub.ArchiveWorkflow(pb.ArchiveWorkflowRequest(id=workflow.id))
    ).workflow
    assert archived.status == pb.WORKFLOW_STATUS_ARCHIVED
    assert archived.HasField("archived_at")
    again = (await daemon.stub.ArchiveWorkflow(pb.ArchiveWorkflowRequest(id=workflow.id))).workflow
    assert again.archived_at == archived.archived_at
    await expect_error(create(daemon, spec(version="2.0.0")), grpc.StatusCode.FAILED_PRECONDITION)
    await expect_error(
        daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=workflow.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    got = (await daemon.stub.GetWorkflow(pb.GetWorkflowRequest(id=workflow.id))).workflow
    assert got.status == pb.WORKFLOW_STATUS_ARCHIVED
    active = await daemon.stub.ListWorkflows(
        pb.ListWorkflowsRequest(status=pb.WORKFLOW_STATUS_ACTIVE)
    )
    assert workflow.id not in [w.id for w in active.workflows]


async def test_invalid_spec_is_invalid_argument_with_rich_details(daemon: Daemon) -> None:
    text = spec(name="bad").replace("datasetName: bad_view", "datasetName: bad-view")
    err = await expect_error(create(daemon, text), grpc.StatusCode.INVALID_ARGUMENT)
    assert "/do/0/build/with/datasetName" in (err.details() or "")
    status = rpc_status.from_call(err)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    fields = [v.field for v in bad.field_violations]
    assert "specification/do/0/build/with/datasetName" in fields
    assert "line 11" in bad.field_violations[0].description
    listed = await daemon.stub.ListWorkflows(pb.ListWorkflowsRequest())
    assert list(listed.workflows) == []


async def test_validate_stores_nothing_and_reports_every_problem(daemon: Daemon) -> None:
    good = await daemon.stub.ValidateWorkflow(pb.ValidateWorkflowRequest(specification=spec()))
    assert good.valid
    assert list(good.diagnostics) == []
    text = spec(
        tasks=(
            "  - a:\n      call: RefreshMaterializedView\n      with: {}\n"
            "  - a:\n      switch: []\n"
        )
    )
    bad = await daemon.stub.ValidateWorkflow(pb.ValidateWorkflowRequest(specification=text))
    assert not bad.valid
    pointers = {d.pointer for d in bad.diagnostics}
    assert "/do/0/a/with" in pointers
    assert any(p.startswith("/do/1") for p in pointers)
    assert all(d.severity == pb.SEVERITY_ERROR for d in bad.diagnostics)
    assert all(d.line > 0 for d in bad.diagnostics)
    listed = await daemon.stub.ListWorkflows(pb.ListWorkflowsRequest())
    assert list(listed.workflows) == []


async def test_schedule_immediately_without_a_schedule_block_stores_nothing(
    daemon: Daemon,
) -> None:
    err = await expect_error(
        daemon.stub.CreateWorkflow(
            pb.CreateWorkflowRequest(specification=spec(), schedule_immediately=True)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "has no schedule block" in (err.details() or "")
    assert list((await daemon.stub.ListWorkflows(pb.ListWorkflowsRequest())).workflows) == []
