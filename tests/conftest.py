"""Shared fixtures: a real workflowd daemon (gRPC on a loopback port, SQLite file, the local data
plane over HTTP) per test, and helpers that wait on conditions instead of sleeping."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
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

    @property
    def jobs_url(self) -> str:
        return self.app.jobs_url


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
async def start_daemon(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Daemon]]]:
    started: list[Daemon] = []

    async def start(
        data_dir: Path | None = None,
        clock: Clock | None = None,
        config_file: Path | None = None,
        telemetry: Telemetry | None = None,
        **overrides: Any,
    ) -> Daemon:
        directory = data_dir or tmp_path / f"daemon{len(started)}"
        settings = daemon_settings(directory, config_file, **overrides)
        app = App(settings, clock=clock, telemetry=telemetry)
        await app.start()
        address = f"127.0.0.1:{app.grpc_port}"
        channel = grpc.aio.insecure_channel(address)
        daemon = Daemon(app, address, channel, pb_grpc.WorkflowServiceStub(channel), directory)
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
