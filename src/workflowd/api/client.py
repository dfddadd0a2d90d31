"""A typed gRPC client for the CLI and scripts: calls, and errors turned into one readable line."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from workflowd.domain.errors import WorkflowdError
from workflowd.domain.json import MAX_SAFE_INTEGER
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc


class ClientError(WorkflowdError):
    """A failed call: the status code name, the server's message (`detail`; `message` is the
    two together) and its field violations."""

    def __init__(self, code: str, message: str, violations: list[tuple[str, str]]) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.detail = message
        self.violations = violations


def to_dict(message: Message) -> dict[str, Any]:
    """The message as JSON data, with proto field names and integral numbers as ints."""
    data: dict[str, Any] = _integral(
        json_format.MessageToDict(message, preserving_proto_field_name=True)
    )
    return data


def _integral(value: Any) -> Any:
    """google.protobuf.Value carries every number as a double, so MessageToDict returns 5.0 where
    the workflow wrote 5. Up to MAX_SAFE_INTEGER a double holds every integer exactly, so an
    integral one was an integer; beyond, 2**53 may have been 2**53 + 1, and stays a float."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER else value
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


def _translate(exc: grpc.aio.AioRpcError) -> ClientError:
    violations: list[tuple[str, str]] = []
    status = rpc_status.from_call(exc)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [(v.field, v.description) for v in bad.field_violations]
    return ClientError(exc.code().name, exc.details() or "", violations)


@dataclass(frozen=True)
class ClientTls:
    """PEM bytes: the CA that signed the daemon's certificate (None: the system's roots), and
    this client's certificate and key when the daemon asks for one."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None


# A daemon that restarts is back within seconds: try to reconnect at least every 2 s, not
# after gRPC's default backoff (up to 2 minutes), during which every call fails at once.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class Client:
    def __init__(self, address: str, *, token: str = "", tls: ClientTls | None = None) -> None:
        if tls is None:
            self._channel = grpc.aio.insecure_channel(address, _CHANNEL_OPTIONS)
        else:
            credentials = grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)
            self._channel = grpc.aio.secure_channel(address, credentials, _CHANNEL_OPTIONS)
        # Metadata rather than call credentials: gRPC sends call credentials only over TLS,
        # and a loopback daemon with a tokens file asks for a token over plain TCP as well.
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.stub = pb_grpc.WorkflowServiceStub(self._channel)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    async def call(self, rpc: str, request: Message, timeout_s: float = 30.0) -> Any:
        try:
            return await getattr(self.stub, rpc)(
                request, timeout=timeout_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc

    async def watch_run(self, run_id: str, after_seq: int = 0) -> AsyncIterator[pb.RunEvent]:
        call = self.stub.WatchRun(
            pb.WatchRunRequest(run_id=run_id, after_seq=after_seq), metadata=self._metadata
        )
        try:
            async for response in call:
                yield response.event
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc

    async def watch_runs(
        self, request: pb.WatchRunsRequest, on_subscribed: Callable[[], None]
    ) -> AsyncIterator[pb.RunEvent]:
        """Events of the runs `request` selects. `on_subscribed` runs once the daemon has sent its
        headers, which it does once subscribed: from then on no matching event can be missed."""
        call = self.stub.WatchRuns(request, metadata=self._metadata)
        try:
            await call.initial_metadata()
            if not call.done():  # a refused call ends without headers; iterating raises
                on_subscribed()
            async for response in call:
                yield response.event
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
