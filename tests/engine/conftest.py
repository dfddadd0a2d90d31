from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dataplane.app import DataPlane
from tests.conftest import Daemon
from tests.engine.crash_support import Stack
from tests.engine.fault_proxy import FaultProxy
from tests.engine.support import AUDIT_CSV, EVENTS_CSV, Plane
from tests.procs import start_dataplane

WORKERS = 2  # the fault rig's data plane worker threads


@pytest.fixture
async def plane(daemon: Daemon) -> AsyncIterator[Plane]:
    plane = Plane.of(daemon)
    await plane.load_csv("events", EVENTS_CSV)
    await plane.load_csv("audit", AUDIT_CSV)
    yield plane
    await plane.aclose()


@dataclass
class Rig:
    proxy: FaultProxy
    plane: Plane  # straight to the data plane, never through the proxy
    start: Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def wire(tmp_path: Path) -> AsyncIterator[tuple[FaultProxy, Plane]]:
    """The real data plane, and the fault proxy in front of it."""
    data_plane = DataPlane(tmp_path / "plane", workers=WORKERS)
    port = await data_plane.start("127.0.0.1", 0)
    direct = f"http://127.0.0.1:{port}"
    proxy = FaultProxy(direct)
    await proxy.start()
    plane = Plane(direct)
    yield proxy, plane
    await plane.aclose()
    await proxy.aclose()
    await data_plane.aclose()
    assert proxy.errors == []


@pytest.fixture
async def rig(
    wire: tuple[FaultProxy, Plane],
    start_daemon: Callable[..., Awaitable[Daemon]],
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[Rig]:
    # Set up after `wire`, so the daemons drain (start_daemon's teardown) before it closes.
    proxy, plane = wire

    async def start(**overrides: Any) -> Daemon:
        return await start_daemon(jobs_url=proxy.url, **overrides)

    yield Rig(proxy, plane, start)
    # Faults are warnings; an ERROR from the daemon (a crashed watcher, an internal error) is not.
    errors = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.get_records("call")
        if r.levelno >= logging.ERROR and r.name.startswith("workflowd")
    ]
    assert errors == []


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    proc, url = await start_dataplane(tmp_path / "plane")
    stack = Stack(tmp_path, proc, url)
    await stack.plane.load_csv("events", EVENTS_CSV)
    await stack.plane.load_csv("audit", AUDIT_CSV)
    yield stack
    await stack.aclose()
