"""Our errors → gRPC status codes, in one table, with rich details for programs to read."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import NoReturn, Protocol, TypeAlias, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.trace import Tracer

from workflowd.api import convert
from workflowd.api.auth import Authenticator
from workflowd.api.handlers import Undecodable
from workflowd.api.tracing import ended, rpc_span
from workflowd.domain import ids
from workflowd.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidRequest,
    InvalidSpecification,
    NotFound,
    OutOfRange,
    QuotaExceeded,
    Unauthenticated,
    Unavailable,
    WorkflowdError,
)

log = logging.getLogger("workflowd.api")

_CODES: dict[type[WorkflowdError], int] = {
    InvalidSpecification: code_pb2.INVALID_ARGUMENT,
    InvalidRequest: code_pb2.INVALID_ARGUMENT,
    NotFound: code_pb2.NOT_FOUND,
    AlreadyExists: code_pb2.ALREADY_EXISTS,
    FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    QuotaExceeded: code_pb2.RESOURCE_EXHAUSTED,
    OutOfRange: code_pb2.OUT_OF_RANGE,
    Unavailable: code_pb2.UNAVAILABLE,
    Unauthenticated: code_pb2.UNAUTHENTICATED,
}


# The status travels in trailing metadata, which gRPC caps (8 KiB by default, beyond which the
# caller sees RESOURCE_EXHAUSTED instead of our answer): keep it well inside that.
_MAX_MESSAGE_CHARS = 1000
_MAX_DETAILS_BYTES = 4096

Violation: TypeAlias = error_details_pb2.BadRequest.FieldViolation


def to_status(exc: WorkflowdError) -> grpc.Status:
    code = next((c for kind, c in _CODES.items() if isinstance(exc, kind)), code_pb2.INTERNAL)
    status = status_pb2.Status(code=code, message=_bounded(exc.message, _MAX_MESSAGE_CHARS))
    violations = _fitting(_field_violations(exc))
    if violations:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=violations))
        status.details.append(detail)
    if isinstance(exc, QuotaExceeded):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=exc.setting, description=status.message
                    )
                ]
            )
        )
        status.details.append(detail)
    converted: grpc.Status = rpc_status.to_status(status)
    return converted


def _bounded(text: str, limit: int, printable: bool = True) -> str:
    """`text` cut to `limit`. A message is for a person, who may read it in a terminal
    (grpcurl prints it raw): `printable` shows its control characters (a task name, a caller's
    text quoted in it) as escapes. A field names a place and stays as it is."""
    text = convert.text(text)
    if printable:
        text = ids.printable(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fitting(violations: list[Violation]) -> list[Violation]:
    """As many violations as fit the budget; the last one then says how many were left out."""
    kept: list[Violation] = []
    used = 0
    for index, violation in enumerate(violations):
        size = violation.ByteSize()
        if used + size > _MAX_DETAILS_BYTES:
            left = len(violations) - index
            kept.append(
                Violation(
                    field="",
                    description=f"… and {left} more: ValidateWorkflow lists every problem",
                )
            )
            break
        kept.append(violation)
        used += size
    return kept


def _field_violations(exc: WorkflowdError) -> list[Violation]:
    if isinstance(exc, InvalidSpecification):
        return [
            Violation(
                field=_bounded(f"specification{d.pointer}", 200, printable=False),
                description=_bounded(
                    (f"line {d.line}, column {d.column}: " if d.line else "") + d.message, 500
                ),
            )
            for d in exc.diagnostics
        ]
    if isinstance(exc, InvalidRequest):
        return [Violation(field=exc.field, description=_bounded(exc.reason, 500))]
    return []


def code_of(exc: Exception) -> grpc.StatusCode:
    """The status a call failing with `exc` answers."""
    number = code_pb2.INTERNAL
    if isinstance(exc, WorkflowdError):
        number = next((c for kind, c in _CODES.items() if isinstance(exc, kind)), number)
    return next(code for code in grpc.StatusCode if code.value[0] == number)


async def abort(context: grpc.aio.ServicerContext[object, object], exc: Exception) -> NoReturn:
    if isinstance(exc, WorkflowdError):
        await context.abort_with_status(to_status(exc))
    incident = uuid.uuid4().hex[:12]
    log.exception("unexpected error (incident %s)", incident, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error, logged as incident {incident}")


Ctx = grpc.aio.ServicerContext[object, object]


class Guarded(Protocol):
    """A servicer whose every call is authenticated before anything else is looked at, each in
    a server span when it has a tracer."""

    authenticator: Authenticator
    tracer: Tracer | None


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self", bound=Guarded)


def _admit(servicer: Guarded, request: object, context: Ctx) -> None:
    """Who may call comes first (an unauthenticated caller learns nothing about its request),
    then whether the request could be decoded at all."""
    servicer.authenticator.principal(context)
    if isinstance(request, Undecodable):
        raise InvalidRequest("request", f"cannot be decoded: {request.reason}")


def unary(
    method: Callable[[Self, Req, Ctx], Awaitable[Resp]],
) -> Callable[[Self, Req, Ctx], Awaitable[Resp]]:
    """Translate our errors (and hide anything else) for a unary RPC."""

    @wraps(method)
    async def wrapper(self: Self, request: Req, context: Ctx) -> Resp:
        with rpc_span(self.tracer, method.__name__, context) as span:
            try:
                _admit(self, request, context)
                answer = await method(self, request, context)
            except grpc.aio.AbortError:
                ended(span, context.code() or grpc.StatusCode.UNKNOWN)
                raise
            except Exception as exc:
                ended(span, code_of(exc))
                await abort(context, exc)
            ended(span, grpc.StatusCode.OK)
            return answer

    return wrapper


def streaming(
    method: Callable[[Self, Req, Ctx], AsyncIterator[Resp]],
) -> Callable[[Self, Req, Ctx], AsyncIterator[Resp]]:
    """Translate our errors for a server-streaming RPC."""

    @wraps(method)
    async def wrapper(self: Self, request: Req, context: Ctx) -> AsyncIterator[Resp]:
        with rpc_span(self.tracer, method.__name__, context) as span:
            try:
                _admit(self, request, context)
                async for item in method(self, request, context):
                    yield item
            except grpc.aio.AbortError:
                ended(span, context.code() or grpc.StatusCode.UNKNOWN)
                raise
            except Exception as exc:
                ended(span, code_of(exc))
                await abort(context, exc)
            ended(span, grpc.StatusCode.OK)

    return wrapper
