"""The data plane's part of a run's trace: a job submitted with a `traceparent` keeps it, and
each execution of its effect is a span under that parent (docs/jobs-api.md, "Traces").

Exported over OTLP/HTTP only when the standard `OTEL_*` variables ask for it (the same rule as
workflowd's, which hands its variables to the data plane it starts); without them no tracer
exists and no span is made. A job submitted without a `traceparent` makes no span either.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from dataplane.model import Job

TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_PROPAGATOR = TraceContextTextMapPropagator()


def traceparent_of(header: str | None) -> str | None:
    """A well-formed W3C `traceparent` header, or None (anything else is ignored)."""
    if header is None or not TRACEPARENT.fullmatch(header.strip()):
        return None
    return header.strip()


def exporting(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()}
    if exporters:
        return "otlp" in exporters and "none" not in exporters
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def provider_from_env(env: Mapping[str, str]) -> TracerProvider | None:
    if not exporting(env):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The exporter reads its endpoint, headers and timeout from the same variables.
    return provider_with(BatchSpanProcessor(OTLPSpanExporter()), env)


def provider_with(processor: SpanProcessor, env: Mapping[str, str]) -> TracerProvider:
    name = env.get("OTEL_SERVICE_NAME") or "workflowd-dataplane"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(processor)
    return provider


class JobTracing:
    def __init__(self, tracer: Tracer | None, company: str) -> None:
        self._tracer = tracer
        self._company = company

    @contextlib.contextmanager
    def effect(self, job: Job, speculative: bool) -> Iterator[None]:
        """One execution of the job's effect, as a span under its submitter's."""
        if self._tracer is None or job.traceparent is None:
            yield
            return
        parent = _PROPAGATOR.extract({"traceparent": job.traceparent})
        attributes: dict[str, str | bool] = {
            "dataplane.job.id": job.job_id,
            "dataplane.job.type": job.type.value,
            "dataplane.company": self._company,
            "dataplane.job.speculative": speculative,
        }
        with self._tracer.start_as_current_span(
            f"job {job.type.value}",
            parent,
            SpanKind.CONSUMER,
            attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200]))
                raise
