"""gRPC server spans: one per WorkflowService call, continuing the caller's trace when its
metadata carries a `traceparent`; none without a tracer (tracing off)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from workflowd.api.handlers import SERVICE

_PROPAGATOR = TraceContextTextMapPropagator()


@contextlib.contextmanager
def rpc_span(
    tracer: Tracer | None, method: str, context: grpc.aio.ServicerContext[object, object]
) -> Iterator[Span | None]:
    if tracer is None:
        yield None
        return
    carrier = {
        key: value
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str) and key in ("traceparent", "tracestate")
    }
    attributes = {"rpc.system": "grpc", "rpc.service": SERVICE.full_name, "rpc.method": method}
    with tracer.start_as_current_span(
        f"{SERVICE.full_name}/{method}",
        _PROPAGATOR.extract(carrier),
        SpanKind.SERVER,
        attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def ended(span: Span | None, code: grpc.StatusCode) -> None:
    """The call's status, on its span."""
    if span is None:
        return
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code != grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))
