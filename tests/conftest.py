"""Shared fixtures: a real workflowd daemon (gRPC on a loopback port, SQLite file, the local data
plane over HTTP) per test, and helpers that wait on conditions instead of sleeping.

The daemons of one test process share one local data plane (a real `python -m dataplane serve`
over HTTP, started once): each daemon files its jobs and datasets under a company of its own
(`--jobs-company`, with the plane's service token), so no test sees another's. A test that
needs the daemon's own embedded data plane (its process, its tokens, TLS or quotas) gets one:
`start_daemon(own_plane=True)` or the `own_plane` mark, or any setting of the embedded plane,
tokens or TLS."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from tests.spec.official_schema import assert_valid_under_official_schema
from workflowd.app import App
from workflowd.engine.clock import Clock
from workflowd.settings import Settings
from workflowd.telemetry import Telemetry
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout_s: float = 10.0, interval_s: float = 0.02
) -> T:
    """Re-run `check` until it returns a truthy value or stops raising AssertionError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            result = await check()
            if result:
                return result
        except AssertionError:
            if loop.time() > deadline:
                raise
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)  # ok: polling interval of a bounded wait


@dataclass
class Daemon:
    app: App
    address: str
    channel: grpc.aio.Channel
    stub: pb_grpc.WorkflowServiceStub
    data_dir: Path
    # What a caller of its data plane sends to reach the daemon's company there (empty for
    # the daemon's own embedded plane, which serves one company without tokens).
    plane_headers: dict[str, str] = field(default_factory=dict)

    @property
    def jobs_url(self) -> str:
        return self.app.jobs_url


@dataclass(frozen=True)
class SharedPlane:
    url: str
    token: str

    def headers(self, company: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-Workflowd-Company": company}


@pytest.fixture(scope="session")
def shared_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedPlane]:
    """One data plane process for the daemons of this test process, with a service token."""
    directory = tmp_path_factory.mktemp("shared-plane")
    token = secrets.token_urlsafe(32)
    tokens = directory / "tokens.toml"
    digest = hashlib.sha256(token.encode()).hexdigest()
    tokens.write_text(f'[[service_tokens]]\nname = "tests"\nsha256 = "{digest}"\n')
    tokens.chmod(0o600)
    argv = [sys.executable, "-m", "dataplane", "serve", "--listen", "127.0.0.1:0"]
    argv += ["--data-dir", str(directory / "data"), "--tokens-file", str(tokens)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen: collections.deque[str] = collections.deque(maxlen=50)
    url = ""
    while not url:
        line = proc.stdout.readline()  # pytest-timeout bounds a plane that never says it serves
        if not line:
            raise AssertionError(f"the shared data plane exited ({proc.wait()}):\n{''.join(seen)}")
        seen.append(line)
        found = re.search(r"listening on (http://\S+)", line)
        url = found.group(1) if found else ""
    # Keep reading so the plane never blocks on a full pipe.
    drain = threading.Thread(target=seen.extend, args=(proc.stdout,), daemon=True)
    drain.start()
    yield SharedPlane(url, token)
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    drain.join(timeout=15)
    proc.stdout.close()


# Settings that concern the daemon's own data plane (or make it one of several companies): a
# daemon given any of them gets its embedded plane.
_OWN_PLANE = ("tokens_file", "jobs_", "dataplane_", "tls_", "quota_dataset_bytes")


def daemon_settings(data_dir: Path, config_file: Path | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "http_listen": "127.0.0.1:0",
        "dataplane_listen": "127.0.0.1:0",
        "data_dir": data_dir,
        "jobs_retry_deadline_s": 5.0,
    }
    values.update(overrides)
    return Settings.load(values, {}, config_file)


@pytest.fixture
async def start_daemon(
    request: pytest.FixtureRequest, tmp_path: Path, shared_plane: SharedPlane
) -> AsyncIterator[Callable[..., Awaitable[Daemon]]]:
    started: list[Daemon] = []
    # A daemon started again on the same data directory finds its jobs under the same company.
    companies: dict[Path, str] = {}

    async def start(
        data_dir: Path | None = None,
        clock: Clock | None = None,
        config_file: Path | None = None,
        telemetry: Telemetry | None = None,
        own_plane: bool = request.node.get_closest_marker("own_plane") is not None,
        **overrides: Any,
    ) -> Daemon:
        directory = data_dir or tmp_path / f"daemon{len(started)}"
        headers: dict[str, str] = {}
        if not (own_plane or config_file or any(k.startswith(_OWN_PLANE) for k in overrides)):
            company = companies.setdefault(directory, f"test-{secrets.token_hex(6)}")
            overrides |= {
                "jobs_url": shared_plane.url,
                "jobs_token": shared_plane.token,
                "jobs_company": company,
            }
            headers = shared_plane.headers(company)
        settings = daemon_settings(directory, config_file, **overrides)
        app = App(settings, clock=clock, telemetry=telemetry)
        await app.start()
        address = f"127.0.0.1:{app.grpc_port}"
        channel = grpc.aio.insecure_channel(address)
        stub = pb_grpc.WorkflowServiceStub(channel)
        daemon = Daemon(app, address, channel, stub, directory, headers)
        started.append(daemon)
        return daemon

    yield start
    for daemon in reversed(started):
        # A daemon with tokens lists nothing without one; its specs are checked where made.
        settings = daemon.app.settings
        skip = daemon.app.drained or settings.authenticated or bool(settings.tls_cert)
        stored = [] if skip else await stored_specifications(daemon)
        await daemon.channel.close()
        await daemon.app.drain()
        # Every spec this project accepted in a test must be valid DSL under the official schema.
        for text in stored:
            assert_valid_under_official_schema(text)


async def stored_specifications(daemon: Daemon) -> list[str]:
    texts: list[str] = []
    token = ""
    while True:
        page = await daemon.stub.ListWorkflows(
            pb.ListWorkflowsRequest(page_size=1000, page_token=token)
        )
        for workflow in page.workflows:
            for version in workflow.versions:
                got = await daemon.stub.GetWorkflow(
                    pb.GetWorkflowRequest(id=workflow.id, version=version)
                )
                texts.append(got.workflow.specification)
        token = page.next_page_token
        if not token:
            return texts


@pytest.fixture
async def daemon(start_daemon: Callable[..., Awaitable[Daemon]]) -> Daemon:
    return await start_daemon()


def venv_bin(name: str) -> str:
    """A console script installed next to the running interpreter (the project's venv)."""
    import sys

    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


async def serve_refused(data_dir: Path, *flags: str) -> str:
    """`workflowd serve FLAGS` that must refuse to start: exit code 2 and one line on stderr,
    no traceback; that line."""
    proc = await asyncio.create_subprocess_exec(
        venv_bin("workflowd"),
        "serve",
        "--data-dir",
        str(data_dir),
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    said = err.decode()
    assert proc.returncode == 2, said
    assert said.count("\n") == 1, said
    return said


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
