"""OpenTelemetry traces, exported over OTLP/HTTP only when the standard `OTEL_*` variables ask
for it (docs/operations.md, "Traces"); with none of them, no provider exists and every part of
the daemon is handed no tracer, so tracing costs nothing.

The spans of runs (task instances, jobs API calls) are described on the event loop as values
(`domain/spans.py`) with the ids and times the engine chose, and handed finished to the span
processor (`SpanRecorder`): the loop builds no SDK span for them.

Export is on when `OTEL_TRACES_EXPORTER` names `otlp`, or when it is unset and an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is given; it stays off
with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The SDK reads the other standard
variables itself (headers, timeout, certificate, `OTEL_RESOURCE_ATTRIBUTES`, the sampler, the
batch processor's limits). The `OTEL_*` variables are handed to the local data plane too, which
continues each job's trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, Tracer

from workflowd import __version__
from workflowd.domain import spans
from workflowd.domain.errors import InvalidRequest
from workflowd.domain.spans import SpanRecord

_DEFAULT_ENDPOINT = "http://localhost:4318"
_SHUTDOWN_S = 1.0
_KINDS = {spans.SpanKind.INTERNAL: SpanKind.INTERNAL, spans.SpanKind.CLIENT: SpanKind.CLIENT}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status()


class SpanRecorder:
    """A `SpanSink`: each record becomes a finished span handed straight to the span processor
    (the batch processor only queues it; encoding and export happen on its thread). The ids
    and times are the engine's own, so no SDK span is built, sampled or timed on the loop."""

    def __init__(self, processor: SpanProcessor, resource: Resource) -> None:
        self._processor = processor
        self._resource = resource
        self._scope = InstrumentationScope("workflowd.runs", __version__)

    def record(self, span: SpanRecord) -> None:
        parent = None
        if span.parent_id is not None:
            parent = SpanContext(span.trace_id, span.parent_id, False, _SAMPLED)
        status = Status(StatusCode.ERROR, span.error) if span.error else _UNSET
        self._processor.on_end(
            ReadableSpan(
                span.name,
                SpanContext(span.trace_id, span.span_id, False, _SAMPLED),
                parent,
                self._resource,
                span.attributes,
                kind=_KINDS[span.kind],
                status=status,
                start_time=span.start_ns,
                end_time=span.end_ns,
                instrumentation_scope=self._scope,
            )
        )


@dataclass
class Telemetry:
    provider: TracerProvider | None = None
    env: dict[str, str] = field(default_factory=dict)
    """The `OTEL_*` variables, for the data plane's process."""
    spans: SpanRecorder | None = None
    """Where the runs' spans go (None: tracing off)."""

    def tracer(self, name: str) -> Tracer | None:
        return None if self.provider is None else self.provider.get_tracer(name, __version__)

    async def aclose(self) -> None:
        """Export what is left, for a moment at most (a collector that hangs never holds up a
        drain: the exporter's thread goes on alone)."""
        if self.provider is None:
            return
        provider, self.provider, self.spans = self.provider, None, None
        task = asyncio.ensure_future(asyncio.to_thread(provider.shutdown))
        await asyncio.wait([task], timeout=_SHUTDOWN_S)


def exporting(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()}
    if exporters:
        return "otlp" in exporters and "none" not in exporters
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def telemetry_from_env(env: Mapping[str, str], service: str = "workflowd") -> Telemetry:
    if not exporting(env):
        return Telemetry(env={k: v for k, v in env.items() if k.startswith("OTEL_")})
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise InvalidRequest(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            f"{protocol!r} is not supported: workflowd exports traces over http/protobuf",
        )
    exporter = OTLPSpanExporter(endpoint=_endpoint(env), headers=_headers(env))
    return telemetry_with(BatchSpanProcessor(exporter), env, service)


def telemetry_with(
    processor: SpanProcessor, env: Mapping[str, str], service: str = "workflowd"
) -> Telemetry:
    """Spans to `processor` (an exporter's, or a test's in-memory one)."""
    name = env.get("OTEL_SERVICE_NAME") or service
    resource = Resource.create({"service.name": name, "service.version": __version__})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    otel = {k: v for k, v in env.items() if k.startswith("OTEL_")}
    return Telemetry(provider, otel, SpanRecorder(processor, resource))


def _endpoint(env: Mapping[str, str]) -> str:
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or _DEFAULT_ENDPOINT
    return base.rstrip("/") + "/v1/traces"


def _headers(env: Mapping[str, str]) -> dict[str, str]:
    raw = env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS", "")
    found: dict[str, str] = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            found[unquote(key.strip()).lower()] = unquote(value.strip())
    return found
