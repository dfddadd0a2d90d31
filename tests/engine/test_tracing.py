"""Traces, seen through the SDK's in-memory exporter on a real daemon: one trace per run (its id
is the run's), a span per task instance under the run's (or its enclosing instance's), the jobs
API calls as client spans under their task's, gRPC server spans; a run resumed after a restart
continues its trace; and the OTEL_* rules that decide whether anything is exported at all."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import Daemon
from tests.engine.schedule_support import T0
from tests.engine.support import apply, finished, trigger, wait_for_event, workflow
from tests.scheduler.manual_clock import ManualClock
from workflowd.domain.errors import InvalidRequest
from workflowd.telemetry import Telemetry, telemetry_from_env, telemetry_with
from workflowd.v1 import workflow_service_pb2 as pb

Start = Callable[..., Awaitable[Daemon]]

TWO_VIEWS = workflow(
    "traced",
    """\
  - build:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT 1 AS one, datasetName: traced_one}
  - again:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT 2 AS two, datasetName: traced_two}
""",
)
RETRIED = workflow(
    "retried",
    """\
  - guard:
      try:
        - boom: {raise: {error: {type: https://example.com/flaky, status: 503, title: flaky}}}
      catch:
        retry: {delay: {milliseconds: 5}, limit: {attempt: {count: 1}}}
""",
)
PAUSED = workflow(
    "paused",
    """\
  - first: {set: {step: 1}}
  - pause: {wait: {hours: 1}}
  - last: {set: {step: 3}}
""",
)


def telemetry(exporter: InMemorySpanExporter) -> Telemetry:
    return telemetry_with(SimpleSpanProcessor(exporter), {})


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = named(spans, name)
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


async def test_a_run_is_one_trace_with_a_span_per_task_and_its_job_calls(
    start_daemon: Start,
) -> None:
    exporter = InMemorySpanExporter()
    daemon = await start_daemon(telemetry=telemetry(exporter))
    wf = await apply(daemon, TWO_VIEWS)
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    assert run.status == pb.RUN_STATUS_COMPLETED
    spans = exporter.get_finished_spans()
    root = one(spans, "run analytics/traced")
    assert root.context.trace_id == uuid.UUID(run.id).int
    assert root.parent is None
    assert root.attributes is not None
    assert root.attributes["workflowd.run.status"] == "completed"
    for index, name in enumerate(("build", "again")):
        task = one(spans, f"task /do/{index}/{name}")
        assert task.context.trace_id == root.context.trace_id
        assert parent_id(task) == root.context.span_id
        assert task.attributes is not None
        assert task.attributes["workflowd.task.key"] == f"/do/{index}/{name}"
        assert task.attributes["workflowd.task.attempt"] == 1
        assert task.attributes["workflowd.job.id"] == run.tasks[index].job_id
        posts = [s for s in named(spans, "POST /jobs") if parent_id(s) == task.context.span_id]
        assert len(posts) == 1
        assert posts[0].kind == SpanKind.CLIENT
        assert posts[0].attributes is not None
        assert posts[0].attributes["http.response.status_code"] == 201
        assert task.start_time is not None
        assert root.start_time is not None
        assert root.start_time <= task.start_time
    # The jobs client's own background calls (its event stream, its re-reads) belong to no
    # task, whichever task's call started them.
    assert {s.name for s in spans if s.kind == SpanKind.CLIENT} == {"POST /jobs"}
    served = one(spans, "workflowd.v1.WorkflowService/TriggerWorkflow")
    assert served.kind == SpanKind.SERVER
    assert served.attributes is not None
    assert served.attributes["rpc.grpc.status_code"] == 0


async def test_retried_attempts_are_spans_under_their_try(start_daemon: Start) -> None:
    exporter = InMemorySpanExporter()
    daemon = await start_daemon(telemetry=telemetry(exporter))
    wf = await apply(daemon, RETRIED)
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    assert run.status == pb.RUN_STATUS_FAILED
    spans = exporter.get_finished_spans()
    root = one(spans, "run analytics/retried")
    assert root.status.status_code == StatusCode.ERROR
    guard = one(spans, "task /do/0/guard")
    attempts = named(spans, "task /do/0/guard/try/0/boom")
    assert len(attempts) == 2
    assert {parent_id(s) for s in attempts} == {guard.context.span_id}
    assert sorted(s.attributes["workflowd.task.attempt"] for s in attempts if s.attributes) == [
        1,
        2,
    ]
    assert all(s.status.status_code == StatusCode.ERROR for s in attempts)
    assert len({s.context.span_id for s in attempts}) == 2


async def test_a_resumed_run_continues_its_trace(start_daemon: Start) -> None:
    exporter = InMemorySpanExporter()
    first = await start_daemon(clock=ManualClock(T0), telemetry=telemetry(exporter))
    wf = await apply(first, PAUSED)
    run_id = (await trigger(first, wf.id)).id
    await wait_for_event(first, run_id, pb.RUN_EVENT_TYPE_TASK_WAITING)
    await first.app.drain()
    before = exporter.get_finished_spans()
    assert [s.name for s in before if s.name.startswith(("task", "run"))] == ["task /do/0/first"]

    later = ManualClock(T0 + timedelta(hours=2))
    after = InMemorySpanExporter()  # the first one was shut down with its daemon
    second = await start_daemon(first.data_dir, clock=later, telemetry=telemetry(after))
    run = await finished(second, run_id)
    assert run.status == pb.RUN_STATUS_COMPLETED
    spans = [*before, *after.get_finished_spans()]
    root = one(spans, "run analytics/paused")
    pause = one(spans, "task /do/1/pause")
    first_task = one(spans, "task /do/0/first")
    trace_id = uuid.UUID(run_id).int
    assert {s.context.trace_id for s in (root, pause, first_task)} == {trace_id}
    assert parent_id(first_task) == parent_id(pause) == root.context.span_id
    # Begun by the first daemon, ended by the second: one span from the wait's start.
    assert pause.start_time == int(T0.timestamp() * 1e9)
    assert root.start_time == int(T0.timestamp() * 1e9)
    assert pause.end_time is not None
    assert pause.end_time >= int(later.now().timestamp() * 1e9)


@pytest.mark.parametrize(
    ("env", "exports"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:1"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
async def test_traces_are_exported_only_when_the_otel_variables_ask(
    env: dict[str, str], exports: bool
) -> None:
    found = telemetry_from_env(env)
    assert (found.provider is not None) == exports
    assert (found.tracer("t") is not None) == exports
    assert found.env == env  # handed on to the data plane as they are
    await found.aclose()


def test_an_otlp_protocol_other_than_http_protobuf_is_refused() -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    with pytest.raises(InvalidRequest, match="exports traces over http/protobuf"):
        telemetry_from_env(env)
