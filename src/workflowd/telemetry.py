"""OpenTelemetry traces, exported over OTLP/HTTP only when the standard `OTEL_*` variables ask
for it (docs/operations.md, "Traces"); with none of them, no provider exists and every part of
the daemon is handed no tracer, so tracing costs nothing.

The spans of runs (task instances, jobs API calls) are described on the event loop as values
(`domain/spans.py`) and built and exported by `SpanEmitter`'s thread, with the ids the engine
chose: the loop pays a queue put per span, not the SDK's span objects.

Export is on when `OTEL_TRACES_EXPORTER` names `otlp`, or when it is unset and an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is given; it stays off
with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The SDK reads the other standard
variables itself (headers, timeout, certificate, `OTEL_RESOURCE_ATTRIBUTES`, the sampler, the
batch processor's limits). The `OTEL_*` variables are handed to the local data plane too, which
continues each job's trace.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from urllib.parse import unquote

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)

from workflowd import __version__
from workflowd.domain import spans
from workflowd.domain.errors import InvalidRequest
from workflowd.domain.spans import SpanRecord

log = logging.getLogger("workflowd.telemetry")

_DEFAULT_ENDPOINT = "http://localhost:4318"
_SHUTDOWN_S = 1.0
_MAX_QUEUED = 100_000
_BATCH_S = 0.5
_KINDS = {spans.SpanKind.INTERNAL: SpanKind.INTERNAL, spans.SpanKind.CLIENT: SpanKind.CLIENT}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
# The (trace id, span id) the span being built must have (set on the emitter's thread).
_WANTED: ContextVar[tuple[int, int] | None] = ContextVar("workflowd_span_ids", default=None)


class RunIds(IdGenerator):
    """Random ids, except for the spans whose ids the engine chose (a run's, a task's)."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        wanted = _WANTED.get()
        return wanted[1] if wanted is not None else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        wanted = _WANTED.get()
        return wanted[0] if wanted is not None else self._random.generate_trace_id()


class SpanEmitter:
    """A `SpanSink`: records the event loop appends become SDK spans on a thread of its own,
    in batches (the thread wakes every `_BATCH_S`, not per span: waking it costs the loop more
    than a span does). Past `_MAX_QUEUED` waiting, records are dropped and counted."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._queue: collections.deque[SpanRecord | threading.Event] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="workflowd-spans", daemon=True)
        self._thread.start()

    def record(self, span: SpanRecord) -> None:
        if len(self._queue) >= _MAX_QUEUED:
            self.dropped += 1
            return
        self._queue.append(span)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait (blocking) until every record appended so far is a span."""
        done = threading.Event()
        self._queue.append(done)
        self._wake.set()
        return done.wait(timeout_s)

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(_SHUTDOWN_S)

    def _run(self) -> None:
        while True:
            self._wake.wait(_BATCH_S)
            self._wake.clear()
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item, threading.Event):
                    item.set()
                    continue
                try:
                    self._build(item)
                except Exception:
                    log.exception("a span could not be built")
            if self._stopping:
                return

    def _build(self, record: SpanRecord) -> None:
        above = otel_context.Context()
        if record.parent_id is not None:
            parent = SpanContext(record.trace_id, record.parent_id, False, _SAMPLED)
            above = trace.set_span_in_context(NonRecordingSpan(parent), above)
        wanted = _WANTED.set((record.trace_id, record.span_id))
        try:
            span = self._tracer.start_span(
                record.name,
                above,
                _KINDS[record.kind],
                record.attributes,
                start_time=record.start_ns,
            )
        finally:
            _WANTED.reset(wanted)
        if record.error:
            span.set_status(Status(StatusCode.ERROR, record.error))
        span.end(end_time=record.end_ns)


@dataclass
class Telemetry:
    provider: TracerProvider | None = None
    env: dict[str, str] = field(default_factory=dict)
    """The `OTEL_*` variables, for the data plane's process."""
    spans: SpanEmitter | None = field(init=False, default=None)
    """Where the runs' spans go (None: tracing off)."""

    def __post_init__(self) -> None:
        if self.provider is not None:
            self.spans = SpanEmitter(self.provider.get_tracer("workflowd.runs", __version__))

    def tracer(self, name: str) -> Tracer | None:
        return None if self.provider is None else self.provider.get_tracer(name, __version__)

    async def aclose(self) -> None:
        """Build and export what is left, for a moment at most (a collector that hangs never
        holds up a drain: the exporter's thread goes on alone)."""
        if self.provider is None:
            return
        provider, emitter, self.provider, self.spans = self.provider, self.spans, None, None

        def finish() -> None:
            if emitter is not None:
                emitter.close()
            provider.shutdown()

        task = asyncio.ensure_future(asyncio.to_thread(finish))
        await asyncio.wait([task], timeout=2 * _SHUTDOWN_S)


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
    otel = {k: v for k, v in env.items() if k.startswith("OTEL_")}
    if not exporting(env):
        return Telemetry(env=otel)
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise InvalidRequest(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            f"{protocol!r} is not supported: workflowd exports traces over http/protobuf",
        )
    exporter = OTLPSpanExporter(endpoint=_endpoint(env), headers=_headers(env))
    return Telemetry(tracer_provider(BatchSpanProcessor(exporter), env, service), otel)


def tracer_provider(
    processor: SpanProcessor, env: Mapping[str, str], service: str = "workflowd"
) -> TracerProvider:
    """A provider whose spans go to `processor` (an exporter's, or a test's in-memory one)."""
    name = env.get("OTEL_SERVICE_NAME") or service
    resource = Resource.create({"service.name": name, "service.version": __version__})
    provider = TracerProvider(resource=resource, id_generator=RunIds())
    provider.add_span_processor(processor)
    return provider


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
