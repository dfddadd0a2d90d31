"""Our errors → gRPC status codes, in one table, with rich details for programs to read."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from workflowd.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidRequest,
    InvalidSpecification,
    NotFound,
    NotImplementedYet,
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
    Unavailable: code_pb2.UNAVAILABLE,
    NotImplementedYet: code_pb2.UNIMPLEMENTED,
}


def to_status(exc: WorkflowdError) -> grpc.Status:
    code = next((c for kind, c in _CODES.items() if isinstance(exc, kind)), code_pb2.INTERNAL)
    status = status_pb2.Status(code=code, message=exc.message)
    violations = _field_violations(exc)
    if violations:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=violations))
        status.details.append(detail)
    converted: grpc.Status = rpc_status.to_status(status)
    return converted


def _field_violations(exc: WorkflowdError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    if isinstance(exc, InvalidSpecification):
        return [
            error_details_pb2.BadRequest.FieldViolation(
                field=f"specification{d.pointer}",
                description=(f"line {d.line}, column {d.column}: " if d.line else "") + d.message,
            )
            for d in exc.diagnostics
        ]
    if isinstance(exc, InvalidRequest):
        return [
            error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=exc.message)
        ]
    return []


async def abort(context: grpc.aio.ServicerContext[object, object], exc: Exception) -> NoReturn:
    if isinstance(exc, WorkflowdError):
        await context.abort_with_status(to_status(exc))
    incident = uuid.uuid4().hex[:12]
    log.exception("unexpected error (incident %s)", incident, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error, logged as incident {incident}")


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")
Ctx = grpc.aio.ServicerContext[object, object]


def unary(
    method: Callable[[Self, Req, Ctx], Awaitable[Resp]],
) -> Callable[[Self, Req, Ctx], Awaitable[Resp]]:
    """Translate our errors (and hide anything else) for a unary RPC."""

    @wraps(method)
    async def wrapper(self: Self, request: Req, context: Ctx) -> Resp:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc)

    return wrapper


def streaming(
    method: Callable[[Self, Req, Ctx], AsyncIterator[Resp]],
) -> Callable[[Self, Req, Ctx], AsyncIterator[Resp]]:
    """Translate our errors for a server-streaming RPC."""

    @wraps(method)
    async def wrapper(self: Self, request: Req, context: Ctx) -> AsyncIterator[Resp]:
        try:
            async for item in method(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc)

    return wrapper
