"""The service's method handlers, registered with request decoding that cannot fail the call.

gRPC's generated registration hands the raw bytes to `Message.FromString`; when protobuf refuses
them (nested deeper than its recursion limit, a string that is not UTF-8, a truncated field) the
server answers UNKNOWN with Python's exception class in the message. Here the decoder instead
returns an `Undecodable` marker, and the servicer's error wrapper turns it into
INVALID_ARGUMENT with a sentence, like any other bad request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from workflowd.v1 import workflow_service_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["WorkflowService"]
_TOO_DEEP = "it is nested too deeply (protobuf reads at most 100 levels)"


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Stands in for a request protobuf could not decode; `reason` is safe to show."""

    reason: str


def _lenient(message: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def decode(data: bytes) -> Message | Undecodable:
        try:
            return message.FromString(data)
        except RecursionError:
            return Undecodable(_TOO_DEEP)
        except (DecodeError, UnicodeDecodeError, ValueError) as exc:
            if "depth" in str(exc).lower():  # upb's own limit on nested messages
                return Undecodable(_TOO_DEEP)
            return Undecodable("it is not a valid protobuf message (bad field or UTF-8 text)")

    return decode


def register(servicer: object, server: grpc.aio.Server) -> None:
    """Register every method of WorkflowService implemented by `servicer`."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in SERVICE.methods:
        request: type[Message] = getattr(pb, method.input_type.name)
        response: type[Message] = getattr(pb, method.output_type.name)
        make: Any = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_lenient(request),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
