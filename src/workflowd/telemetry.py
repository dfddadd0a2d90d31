"""OpenTelemetry traces, exported over OTLP/HTTP only when the standard `OTEL_*` variables ask
for it (docs/operations.md, "Traces"); with none of them, no provider exists and every part of
the daemon is handed no tracer, so tracing costs nothing.

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
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import Tracer

from workflowd import __version__
from workflowd.domain.errors import InvalidRequest
from workflowd.engine.tracing import wanted_ids

_DEFAULT_ENDPOINT = "http://localhost:4318"
_SHUTDOWN_S = 1.0


class RunIds(IdGenerator):
    """Random ids, except for the spans whose ids the engine chose (a run's, a task's)."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        wanted = wanted_ids()
        return wanted[1] if wanted is not None else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        wanted = wanted_ids()
        return wanted[0] if wanted is not None else self._random.generate_trace_id()


@dataclass
class Telemetry:
    provider: TracerProvider | None = None
    env: dict[str, str] = field(default_factory=dict)
    """The `OTEL_*` variables, for the data plane's process."""

    def tracer(self, name: str) -> Tracer | None:
        return None if self.provider is None else self.provider.get_tracer(name, __version__)

    async def aclose(self) -> None:
        """Export what is left, for a moment at most (a collector that hangs never holds up a
        drain: its exporter thread goes on alone)."""
        if self.provider is not None:
            provider, self.provider = self.provider, None
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
