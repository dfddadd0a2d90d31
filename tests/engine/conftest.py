from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Daemon
from tests.engine.support import AUDIT_CSV, EVENTS_CSV, Plane


@pytest.fixture
async def plane(daemon: Daemon) -> AsyncIterator[Plane]:
    plane = Plane(daemon.jobs_url)
    await plane.load_csv("events", EVENTS_CSV)
    await plane.load_csv("audit", AUDIT_CSV)
    yield plane
    await plane.aclose()
