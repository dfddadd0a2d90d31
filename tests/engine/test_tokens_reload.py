"""A reload of the tokens file takes effect everywhere (gRPC and the embedded data plane) or
nowhere, and says why in the log; a daemon started with a file it refuses, or whose data plane
refuses its configuration, stops at once with the reason."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from tests.api.test_tenancy import ACME, GLOBEX, TOKENS, bearer, tokens_file
from tests.conftest import Daemon, eventually, serve_refused
from tests.engine.test_dataplane_trust import status_with
from tests.procs import serve_embedded
from tests.tls import make_pki
from workflowd.api.tokens import sha256_hex
from workflowd.jobs import local
from workflowd.jobs.local_trust import CompanyToken
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc


async def grpc_ok(
    daemon: Daemon | pb_grpc.WorkflowServiceStub, metadata: tuple[tuple[str, str], ...]
) -> bool:
    stub = daemon.stub if isinstance(daemon, Daemon) else daemon
    code = await stub.ListWorkflows(pb.ListWorkflowsRequest(), metadata=metadata).code()
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED)
    return bool(code == grpc.StatusCode.OK)


async def in_force(daemon: Daemon, token: str, company: str) -> tuple[bool, bool]:
    """Whether `token` works on gRPC, and on the data plane, for `company`."""
    return await in_force_at(daemon.stub, daemon.jobs_url, token, company)


async def in_force_at(
    stub: pb_grpc.WorkflowServiceStub, jobs_url: str, token: str, company: str
) -> tuple[bool, bool]:
    plane = await status_with(jobs_url, token, company)
    assert plane in (200, 401)
    return await grpc_ok(stub, bearer(token)), plane == 200


@pytest.fixture
async def daemon(start_daemon: Callable[..., Awaitable[Daemon]], tmp_path: Path) -> Daemon:
    return await start_daemon(tokens_file=str(tokens_file(tmp_path / "tokens.toml", TOKENS)))


ROTATED = {"tok-acme-2": ("acme", "acme-ci"), "tok-globex": ("globex", "globex-ci")}


async def test_a_file_workflowd_refuses_changes_nothing_anywhere(
    daemon: Daemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Rotating acme's token under a name globex's entry also uses: one file, two readers, and
    # before they shared their rules gRPC took it while the data plane refused it.
    path = tokens_file(tmp_path / "tokens.toml", ROTATED)
    path.write_text(path.read_text().replace('"globex-ci"', '"acme-ci"'))
    assert not await daemon.app.reload_tokens()
    assert await in_force(daemon, "tok-acme", "acme") == (True, True)
    assert await in_force(daemon, "tok-acme-2", "acme") == (False, False)
    assert "tokens not reloaded, the old ones stay in force: tokens_file: the tokens file" in (
        caplog.text
    )
    assert "name is already used by another token" in caplog.text


async def test_a_good_file_takes_effect_on_both_servers(daemon: Daemon, tmp_path: Path) -> None:
    tokens_file(tmp_path / "tokens.toml", ROTATED)
    assert await daemon.app.reload_tokens()
    assert await in_force(daemon, "tok-acme", "acme") == (False, False)
    assert await in_force(daemon, "tok-acme-2", "acme") == (True, True)
    assert await in_force(daemon, "tok-globex", "globex") == (True, True)


async def test_tokens_the_data_plane_refuses_stay_out_and_the_file_is_restored(
    daemon: Daemon,
) -> None:
    plane = daemon.app.dataplane
    assert plane is not None
    written = daemon.data_dir / "dataplane-tokens.toml"
    before = written.read_text()
    # What workflowd never writes, but a data plane with other rules would refuse.
    refused = [CompanyToken("Not A Company", "x", sha256_hex("tok-x"))]
    refusal = await plane.reload(refused)
    assert refusal is not None
    assert refusal.startswith("the data plane refused them: the tokens file ")
    assert "company 'Not A Company' must match" in refusal
    assert written.read_text() == before
    assert await status_with(daemon.jobs_url, "tok-acme", "acme") == 200
    # A restart reads the file as it was restored.
    pid = plane.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    async def restarted() -> bool:
        return plane.pid != pid and await status_with(daemon.jobs_url, "tok-acme", "acme") == 200

    await eventually(restarted, timeout_s=60)


async def test_grpc_does_not_switch_until_the_data_plane_has(
    daemon: Daemon,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    plane = daemon.app.dataplane
    assert plane is not None
    monkeypatch.setattr(local, "RELOAD_TIMEOUT_S", 1.0)
    pid = plane.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a data plane that cannot answer
    try:
        tokens_file(tmp_path / "tokens.toml", ROTATED)
        with caplog.at_level(logging.ERROR, "workflowd"):
            assert not await daemon.app.reload_tokens()
    finally:
        with contextlib.suppress(ProcessLookupError):  # already replaced
            os.kill(pid, signal.SIGCONT)
    assert (
        "tokens not reloaded, the old ones stay in force on gRPC and the data plane: the data"
        " plane did not answer within 1 s; it is restarted with the previous tokens"
    ) in caplog.text
    assert await grpc_ok(daemon, ACME)
    assert not await grpc_ok(daemon, bearer("tok-acme-2"))

    # The child that did not answer is replaced, and reads the tokens still in force.
    async def replaced() -> bool:
        return plane.pid != pid and await status_with(daemon.jobs_url, "tok-acme", "acme") == 200

    await eventually(replaced, timeout_s=60)
    assert await status_with(daemon.jobs_url, "tok-acme-2", "acme") == 401
    assert await grpc_ok(daemon, GLOBEX)


@pytest.mark.slow
async def test_sighup_to_workflowd_serve_reloads_both_servers(tmp_path: Path) -> None:
    path = tokens_file(tmp_path / "tokens.toml", TOKENS)
    process, address, jobs_url = await serve_embedded(tmp_path / "d", "--tokens-file", str(path))
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.WorkflowServiceStub(channel)
            assert await in_force_at(stub, jobs_url, "tok-acme", "acme") == (True, True)
            tokens_file(path, ROTATED)
            process.proc.send_signal(signal.SIGHUP)

            async def rotated() -> bool:
                return await in_force_at(stub, jobs_url, "tok-acme-2", "acme") == (True, True)

            await eventually(rotated)
            assert await in_force_at(stub, jobs_url, "tok-acme", "acme") == (False, False)
    finally:
        await process.stop()
    assert process.proc.returncode == 0


async def test_serve_stops_at_once_on_a_tokens_file_it_refuses(tmp_path: Path) -> None:
    path = tokens_file(tmp_path / "tokens.toml", ROTATED)
    path.write_text(path.read_text().replace('"globex-ci"', '"acme-ci"'))
    said = await serve_refused(tmp_path / "d", "--tokens-file", str(path))
    assert said == (
        f"workflowd: cannot start: tokens_file: the tokens file {path}: tokens[1] (name"
        " 'acme-ci'): name is already used by another token\n"
    )


async def test_serve_stops_at_once_when_its_data_plane_refuses_its_configuration(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path / "pki")
    said = await serve_refused(
        tmp_path / "d",
        "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--dataplane-listen", "127.0.0.1:0", "--log-level", "ERROR",
        "--dataplane-tls-cert", str(pki.server_cert), "--dataplane-tls-key", str(pki.client_key),
    )  # fmt: skip
    assert said.startswith(
        f"workflowd: cannot start: dataplane: cannot use the certificate {pki.server_cert} with"
        f" the key {pki.client_key}: "
    )
