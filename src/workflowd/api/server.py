"""The gRPC server: WorkflowService, the standard health service and reflection."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.trace import Tracer

from workflowd.api import handlers
from workflowd.api.auth import Authenticator
from workflowd.api.servicer import WorkflowService
from workflowd.engine.definitions import Definitions
from workflowd.engine.notify import DeliveryLog
from workflowd.engine.retention import Retention
from workflowd.engine.runs import Runs
from workflowd.engine.schedules import Schedules

SERVICE_NAME = handlers.SERVICE.full_name


@dataclass(frozen=True, slots=True)
class Tls:
    """PEM bytes: the server's certificate chain and key, and the CA that client certificates
    must chain to (None: clients need no certificate)."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None


class GrpcServer:
    """Owns the grpc.aio server; `start` binds and serves, `stop` refuses new calls and ends."""

    def __init__(
        self,
        definitions: Definitions,
        runs: Runs,
        schedules: Schedules,
        auth: Authenticator,
        *,
        retention: Retention,
        deliveries: DeliveryLog,
        tracer: Tracer | None = None,
        max_message_bytes: int,
        tls: Tls | None = None,
    ) -> None:
        self._tls = tls
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # gRPC sets SO_REUSEPORT by default: a second daemon on the same port would then
            # silently take half of the connections instead of failing to start.
            ("grpc.so_reuseport", 0),
        ]
        self._server = grpc.aio.server(options=options)
        service = WorkflowService(
            definitions,
            runs,
            schedules,
            auth,
            retention=retention,
            deliveries=deliveries,
            tracer=tracer,
            max_message_bytes=max_message_bytes,
        )
        handlers.register(service, self._server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.port = 0

    async def start(self, address: str) -> int:
        try:
            if self._tls is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, self._credentials(self._tls))
        except RuntimeError as exc:  # grpc's way of saying the bind failed
            raise OSError(f"cannot listen on {address}: the address is in use or invalid") from exc
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        await self._server.start()
        await self._set_serving(True)
        return self.port

    @staticmethod
    def _credentials(tls: Tls) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(tls.key, tls.cert)],
            root_certificates=tls.client_ca,
            require_client_auth=tls.client_ca is not None,
        )

    async def not_serving(self) -> None:
        await self._set_serving(False)

    async def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self._health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        await self._server.stop(grace_s)
