"""gRPC over TLS with certificates the test makes: grpcurl with the CA succeeds and plaintext
fails; in client-certificate mode a client without a certificate is refused."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from tests.api.test_grpcurl import run_grpcurl
from tests.conftest import Daemon
from tests.tls import Pki, make_pki
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


async def list_workflows(address: str, credentials: grpc.ChannelCredentials) -> int:
    async with grpc.aio.secure_channel(address, credentials) as channel:
        stub = pb_grpc.WorkflowServiceStub(channel)
        response = await stub.ListWorkflows(pb.ListWorkflowsRequest(), timeout=10)
        return len(response.workflows)


async def test_grpcurl_with_the_ca_succeeds_and_plaintext_fails(
    start_daemon: Callable[..., Awaitable[Daemon]], pki: Pki
) -> None:
    daemon = await start_daemon(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    code, out, err = await run_grpcurl(
        ["-cacert", str(pki.ca), daemon.address, "workflowd.v1.WorkflowService/ListWorkflows"]
    )
    assert code == 0, err
    assert json.loads(out) == {}
    code, _, err = await run_grpcurl(
        ["-plaintext", daemon.address, "workflowd.v1.WorkflowService/ListWorkflows"]
    )
    assert code != 0
    ca = pki.ca.read_bytes()
    assert await list_workflows(daemon.address, grpc.ssl_channel_credentials(ca)) == 0


async def test_client_certificates_are_required_when_configured(
    start_daemon: Callable[..., Awaitable[Daemon]], pki: Pki
) -> None:
    daemon = await start_daemon(
        tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), tls_client_ca=str(pki.ca)
    )
    ca = pki.ca.read_bytes()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await list_workflows(daemon.address, grpc.ssl_channel_credentials(ca))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with_cert = grpc.ssl_channel_credentials(
        ca, pki.client_key.read_bytes(), pki.client_cert.read_bytes()
    )
    assert await list_workflows(daemon.address, with_cert) == 0
    code, _, err = await run_grpcurl(
        [
            "-cacert", str(pki.ca), "-cert", str(pki.client_cert), "-key", str(pki.client_key),
            daemon.address, "workflowd.v1.WorkflowService/ListWorkflows",
        ]
    )  # fmt: skip
    assert code == 0, err
