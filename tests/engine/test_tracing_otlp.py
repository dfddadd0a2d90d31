"""End to end: a daemon whose OTEL_* variables name a local OTLP/HTTP receiver (a small aiohttp
server here, decoding the protobuf requests as a collector would) exports its spans there, and
so does the data plane it starts; the data plane's span of the job's execution hangs under the
task instance's span, in the run's trace."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import Daemon, eventually
from tests.engine.support import apply, finished, trigger, workflow
from workflowd.telemetry import telemetry_from_env
from workflowd.v1 import workflow_service_pb2 as pb

pytestmark = pytest.mark.slow


class Collector:
    """OTLP/HTTP traces: `POST /v1/traces` with an ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []  # (service.name, span)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                self.spans += [(service, span) for span in scope.spans]
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def named(self, service: str, name: str) -> list[Span]:
        return [span for who, span in self.spans if who == service and span.name == name]


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    found = Collector()
    await found.start()
    yield found
    await found.aclose()


async def test_the_data_planes_span_is_under_the_tasks_span(
    start_daemon: Callable[..., Awaitable[Daemon]], collector: Collector
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    # Its own data plane: the child inherits the daemon's OTEL settings and exports its spans.
    daemon = await start_daemon(telemetry=telemetry_from_env(env), own_plane=True)
    spec = workflow(
        "otlp",
        "  - build:\n      call: CreateMaterializedViewIfNotExists\n"
        "      with: {nql: SELECT 1 AS one, datasetName: otlp_view}\n",
    )
    wf = await apply(daemon, spec)
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    assert run.status == pb.RUN_STATUS_COMPLETED

    async def job_span() -> list[Span]:
        return collector.named("workflowd-dataplane", "job materialize-view")

    job = (await eventually(job_span, timeout_s=20))[0]
    await daemon.app.drain()  # the daemon's own spans are flushed as it stops
    task = collector.named("workflowd", "task /do/0/build")
    assert len(task) == 1
    trace_id = uuid.UUID(run.id).bytes
    assert job.trace_id == task[0].trace_id == trace_id
    by_id = {span.span_id: span for _, span in collector.spans}
    ancestors = []
    parent = job.parent_span_id
    while parent in by_id:
        ancestors.append(by_id[parent].name)
        parent = by_id[parent].parent_span_id
    # job execution ← the POST that submitted it ← the task instance ← the run
    assert ancestors == ["POST /jobs", "task /do/0/build", "run analytics/otlp"]
    attributes = {a.key: a.value.string_value for a in job.attributes}
    assert attributes["dataplane.job.id"] == run.tasks[0].job_id
