"""The daemon's credentials reach its own data plane child and no one else: the port stays
the daemon's while the child is dead, each child start has a service token of its own, and a
port taken before the daemon starts is refused in one sentence."""

from __future__ import annotations

import errno
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.api.test_tenancy import ACME, TOKENS, tokens_file
from tests.conftest import Daemon, eventually, serve_refused
from tests.specs import spec
from workflowd.v1 import workflow_service_pb2 as pb

SLOW = (
    "  - count:\n"
    "      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: 'SELECT count(*) AS n FROM range(3000000)', datasetName: counted}\n"
)


async def status_with(url: str, token: str | None, company: str = "acme") -> int:
    headers = {"X-Workflowd-Company": company}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session, session.get(f"{url}/jobs", headers=headers) as r:
        return r.status


def gone(pid: int) -> bool:
    """Exited and reaped: its socket is closed, and the port is free unless someone holds it."""
    return not Path(f"/proc/{pid}").exists()


def bind_refused(host: str, port: int, option: int | None) -> int:
    """Try to take the port as an impostor would (with `option` set); the errno it met."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if option is not None:
            sock.setsockopt(socket.SOL_SOCKET, option, 1)
        try:
            sock.bind((host, port))
            sock.listen()
        except OSError as exc:
            return exc.errno or 0
    return 0


async def test_the_port_stays_the_daemons_and_a_service_token_dies_with_its_child(
    start_daemon: Callable[..., Awaitable[Daemon]], tmp_path: Path
) -> None:
    daemon = await start_daemon(
        tokens_file=str(tokens_file(tmp_path / "tokens.toml", TOKENS)), jobs_retry_deadline_s=120.0
    )
    plane = daemon.app.dataplane
    assert plane is not None
    first_pid, old_token = plane.pid, plane.credential.token
    assert first_pid is not None
    assert old_token is not None
    assert await status_with(daemon.jobs_url, old_token) == 200
    created = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=spec(name="across", tasks=SLOW)), metadata=ACME
    )
    runs = [
        (
            await daemon.stub.TriggerWorkflow(
                pb.TriggerWorkflowRequest(workflow_id=created.workflow.id), metadata=ACME
            )
        ).run.id
        for _ in range(5)
    ]

    os.kill(first_pid, signal.SIGKILL)

    async def reaped() -> bool:
        return gone(first_pid)

    await eventually(reaped)
    # Dead child or not, nobody else can listen on the data plane's port.
    address = urlsplit(daemon.jobs_url)
    assert address.hostname is not None
    assert address.port is not None
    for option in (None, socket.SO_REUSEADDR, socket.SO_REUSEPORT):
        assert bind_refused(address.hostname, address.port, option) == errno.EADDRINUSE, option

    async def restarted() -> bool:
        return (
            plane.pid not in (None, first_pid) and await status_with(daemon.jobs_url, None) == 401
        )

    await eventually(restarted, timeout_s=60)
    assert plane.credential.token not in (None, old_token)
    assert await status_with(daemon.jobs_url, old_token) == 401
    assert await status_with(daemon.jobs_url, plane.credential.token) == 200

    async def completed() -> bool:
        statuses = [
            (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run), metadata=ACME)).run.status
            for run in runs
        ]
        assert pb.RUN_STATUS_FAILED not in statuses
        return statuses == [pb.RUN_STATUS_COMPLETED] * len(runs)

    # The runs in flight went on with the new token (requests refused for carrying the old one
    # were retried).
    await eventually(completed, timeout_s=120, interval_s=0.2)


async def test_serve_refuses_a_taken_data_plane_port_in_one_sentence(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        said = await serve_refused(
            tmp_path / "d",
            "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
            "--dataplane-listen", f"127.0.0.1:{port}", "--log-level", "WARNING",
        )  # fmt: skip
    assert said == (
        f"workflowd: cannot start: the data plane cannot listen on 127.0.0.1:{port}: the port is"
        " taken by another process; choose another --dataplane-listen\n"
    )


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "[::1]:0"])
async def test_the_daemon_calls_the_address_it_bound(
    start_daemon: Callable[..., Awaitable[Daemon]], listen: str
) -> None:
    daemon = await start_daemon(dataplane_listen=listen)
    host = listen.rsplit(":", 1)[0]
    assert daemon.jobs_url.startswith(f"http://{host}:")
    assert await status_with(daemon.jobs_url, None) == 200
