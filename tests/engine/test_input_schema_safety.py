"""`input.schema` through a real daemon: a backtracking pattern is bounded off the event loop while
other RPCs are served, and no `$ref` makes the daemon fetch anything."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import Daemon
from tests.engine.support import apply, finished, jv, workflow
from workflowd.domain.json import Json
from workflowd.spec import SchemaResult, inputschema
from workflowd.v1 import workflow_service_pb2 as pb

TASK = """\
  - first:
      call: CreateMaterializedViewIfNotExists
      with: {nql: 'SELECT 1 AS n', datasetName: n_view}
"""


def with_schema(name: str, schema: str) -> str:
    return workflow(
        name, TASK, extra=f"input:\n  schema:\n    format: json\n    document: {schema}\n"
    )


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A local TCP port: a connection to it is queued for `accept` once `connect` returns."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    yield server
    server.close()


def connections(server: socket.socket) -> int:
    count = 0
    while True:
        try:
            connection, _ = server.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


async def test_a_backtracking_pattern_is_bounded_while_the_daemon_answers(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = "{type: object, properties: {name: {type: string, pattern: '^(a+)+$'}}}"
    wf = await apply(daemon, with_schema("backtracking", schema))
    evaluator = daemon.app.evaluator
    checking = asyncio.Event()
    original = evaluator.check_schema

    async def spy(schema: Json, instance: Json) -> SchemaResult:
        checking.set()
        return await original(schema, instance)

    monkeypatch.setattr(evaluator, "check_schema", spy)
    stalled = asyncio.ensure_future(
        daemon.stub.TriggerWorkflow(
            pb.TriggerWorkflowRequest(workflow_id=wf.id, input=jv({"name": "a" * 39 + "!"}))
        )
    )
    await checking.wait()
    got = await daemon.stub.GetWorkflow(pb.GetWorkflowRequest(id=wf.id))
    health = await health_pb2_grpc.HealthStub(daemon.channel).Check(
        health_pb2.HealthCheckRequest(service="")
    )
    assert got.workflow.id == wf.id
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert not stalled.done()  # both answered while the input was being checked

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stalled
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input.schema took longer than 1 s" in (info.value.details() or "")
    runs = await daemon.stub.ListRuns(pb.ListRunsRequest(workflow_id=wf.id))
    assert list(runs.runs) == []

    ok = await daemon.stub.TriggerWorkflow(
        pb.TriggerWorkflowRequest(workflow_id=wf.id, input=jv({"name": "aaaa"}))
    )
    done = await finished(daemon, ok.run.id)
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error


async def test_a_remote_ref_is_refused_at_creation_without_fetching(
    daemon: Daemon, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    schema = f"{{properties: {{a: {{$ref: 'http://127.0.0.1:{port}/s.json'}}}}}}"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await apply(daemon, with_schema("remote-ref", schema))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "/input/schema/document/properties/a/$ref" in (info.value.details() or "")
    assert connections(listener) == 0


async def test_a_stored_remote_ref_is_not_fetched_when_a_run_is_triggered(
    daemon: Daemon, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a spec stored before references were checked at creation would be.
    monkeypatch.setattr(inputschema, "_references", lambda *args: [])
    port = listener.getsockname()[1]
    schema = f"{{properties: {{a: {{$ref: 'http://127.0.0.1:{port}/s.json'}}}}}}"
    wf = await apply(daemon, with_schema("stored-remote-ref", schema))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.TriggerWorkflow(
            pb.TriggerWorkflowRequest(workflow_id=wf.id, input=jv({"a": 1}))
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Unresolvable" in (info.value.details() or "")
    assert connections(listener) == 0
