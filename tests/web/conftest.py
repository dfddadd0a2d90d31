from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Daemon
from tests.web.support import Visitor


@pytest.fixture
async def visitor(daemon: Daemon) -> AsyncIterator[Visitor]:
    seen = Visitor(daemon)
    yield seen
    await seen.aclose()
