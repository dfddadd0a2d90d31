"""Client certificates cannot be bypassed through the data plane: the embedded data plane
serves HTTPS and asks its callers for the certificates gRPC asks for, the daemon refuses to
start with a data plane weaker than gRPC on a non-loopback address, and the daemon's own calls
go only to the certificate it pinned."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import pytest
from aiohttp import web

from tests.api.test_tenancy import TOKENS, bearer, tokens_file
from tests.conftest import Daemon, eventually, serve_refused
from tests.dataplane.test_tls import NO_CERTIFICATE
from tests.specs import spec
from tests.tls import Pki, make_pki
from workflowd.domain.jobs import JobRequest
from workflowd.jobs import JobsClient, JobsClientConfig, JobsCommunicationError
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

VIEW = (
    "  - view:\n      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: SELECT 1 AS one, datasetName: one}\n"
)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def tls_flags(pki: Pki, *, client_ca: bool, plane: bool, plane_client_ca: bool) -> list[str]:
    flags = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    if client_ca:
        flags += ["--tls-client-ca", str(pki.ca)]
    if plane:
        flags += ["--dataplane-tls-cert", str(pki.server_cert)]
        flags += ["--dataplane-tls-key", str(pki.server_key)]
    if plane_client_ca:
        flags += ["--dataplane-tls-client-ca", str(pki.ca)]
    return flags


PLAIN = (
    "gRPC serves TLS but the data plane would serve 0.0.0.0:50052 in plain HTTP: give"
    " --dataplane-tls-cert and --dataplane-tls-key"
)
NO_CLIENT_CA = (
    "gRPC requires client certificates but the data plane on 0.0.0.0:50052 would not: give"
    " --dataplane-tls-client-ca"
)


@pytest.mark.parametrize(
    ("client_ca", "plane", "plane_client_ca", "said"),
    [(True, False, False, PLAIN), (False, False, False, PLAIN), (True, True, False, NO_CLIENT_CA)],
)
async def test_serve_refuses_a_data_plane_weaker_than_grpc(
    tmp_path: Path, pki: Pki, client_ca: bool, plane: bool, plane_client_ca: bool, said: str
) -> None:
    tokens = tokens_file(tmp_path / "tokens.toml", TOKENS)
    refused = await serve_refused(
        tmp_path / "d",
        "--tokens-file", str(tokens), "--dataplane-listen", "0.0.0.0:50052",
        *tls_flags(pki, client_ca=client_ca, plane=plane, plane_client_ca=plane_client_ca),
    )  # fmt: skip
    assert refused == f"workflowd: dataplane_listen: {said}, or a loopback --dataplane-listen\n"


async def test_serve_refuses_a_web_page_beyond_loopback_in_plain_http_beside_grpc_tls(
    tmp_path: Path, pki: Pki
) -> None:
    tokens = tokens_file(tmp_path / "tokens.toml", TOKENS)
    flags = tls_flags(pki, client_ca=False, plane=False, plane_client_ca=False)
    refused = await serve_refused(
        tmp_path / "d", "--tokens-file", str(tokens), "--http-listen", "0.0.0.0:9464", *flags
    )
    assert refused == (
        "workflowd: http_listen: gRPC serves TLS but the web page would serve 0.0.0.0:9464 in"
        " plain HTTP (tokens at sign-in, session cookies, the companies' runs): serve it on"
        " loopback behind a TLS proxy, or pass --no-web to keep only /metrics and /healthz"
        " there\n"
    )


@pytest.fixture
async def daemon(
    start_daemon: Callable[..., Awaitable[Daemon]], tmp_path: Path, pki: Pki
) -> Daemon:
    return await start_daemon(
        tokens_file=str(tokens_file(tmp_path / "tokens.toml", TOKENS)),
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca),
        dataplane_listen="0.0.0.0:0",
        dataplane_tls_cert=str(pki.server_cert),
        dataplane_tls_key=str(pki.server_key),
        dataplane_tls_client_ca=str(pki.ca),
    )


async def plane_status(url: str, pki: Pki, with_certificate: bool) -> int:
    context = ssl.create_default_context(cafile=pki.ca)
    if with_certificate:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    headers = {"Authorization": "Bearer tok-acme"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/datasets", headers=headers, ssl=context) as response,
    ):
        if response.status == 401:
            assert (await response.json())["detail"] == NO_CERTIFICATE
        return response.status


async def test_the_embedded_data_plane_asks_for_the_certificates_grpc_asks_for(
    daemon: Daemon, pki: Pki
) -> None:
    assert daemon.jobs_url.startswith("https://127.0.0.1:")
    assert await plane_status(daemon.jobs_url, pki, with_certificate=False) == 401
    assert await plane_status(daemon.jobs_url, pki, with_certificate=True) == 200
    plain = daemon.jobs_url.replace("https://", "http://")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await session.get(f"{plain}/datasets", headers={"Authorization": "Bearer tok-acme"})
    # The daemon's own calls (pinned certificate, service token) run a workflow.
    credentials = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
    )
    async with grpc.aio.secure_channel(daemon.address, credentials) as channel:
        stub = pb_grpc.WorkflowServiceStub(channel)
        created = await stub.CreateWorkflow(
            pb.CreateWorkflowRequest(
                specification=spec(name="over-tls", tasks=VIEW), trigger_immediately=True
            ),
            metadata=bearer("tok-acme"),
        )

        async def completed() -> bool:
            got = await stub.GetRun(
                pb.GetRunRequest(run_id=created.run_id), metadata=bearer("tok-acme")
            )
            assert got.run.status != pb.RUN_STATUS_FAILED, got.run
            return got.run.status == pb.RUN_STATUS_COMPLETED

        await eventually(completed, timeout_s=60)


@pytest.fixture
async def impostor(pki: Pki) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTPS jobs API with a certificate the CA signed, but not the pinned one; what it
    heard (the Authorization headers of the requests it received)."""
    heard: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        heard.append(request.headers.get("Authorization", ""))
        return web.json_response({}, status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}", heard
    await runner.cleanup()


async def test_the_jobs_client_sends_nothing_to_a_certificate_it_did_not_pin(
    pki: Pki, impostor: tuple[str, list[str]]
) -> None:
    url, heard = impostor
    other = make_pki(pki.ca.parent.parent / "other")  # a certificate for the same names
    pin = hashlib.sha256(ssl.PEM_cert_to_DER_cert(other.server_cert.read_text())).digest()
    config = JobsClientConfig(
        base_url=url, token="the-service-token", pinned_sha256=pin, retry_deadline_s=0.5
    )
    request = JobRequest(type="materialize-view", input={}, idempotency_key="k")
    async with JobsClient(config) as client:
        with pytest.raises(JobsCommunicationError):
            await client.submit(request, "acme")
    assert heard == []
    # The same client with the impostor's own certificate pinned does reach it.
    right = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pki.server_cert.read_text())).digest()
    config = JobsClientConfig(
        base_url=url, token="the-service-token", pinned_sha256=right, retry_deadline_s=0.5
    )
    async with JobsClient(config) as client:
        with pytest.raises(JobsCommunicationError):
            await client.submit(request, "acme")
    assert heard
    assert set(heard) == {"Bearer the-service-token"}
