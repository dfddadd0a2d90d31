"""The web page of a daemon on PostgreSQL: the same listings, filters and live stream."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.conftest import Daemon
from tests.engine.support import apply, finished, trigger
from tests.postgres import fresh_schema
from tests.web.support import BROKEN, QUICK, Visitor


@pytest.fixture
async def store_url() -> AsyncIterator[str]:
    with fresh_schema() as url:
        yield url


# `store_url` first: its schema is dropped after the daemon has drained, not before.
async def test_the_runs_page_on_postgresql(
    store_url: str, start_daemon: Callable[..., Awaitable[Daemon]]
) -> None:
    daemon = await start_daemon(store=store_url)
    visitor = Visitor(daemon)
    try:
        ok = await finished(daemon, (await trigger(daemon, (await apply(daemon, QUICK)).id)).id)
        bad = await finished(daemon, (await trigger(daemon, (await apply(daemon, BROKEN)).id)).id)

        async def shown(**params: object) -> set[str]:
            status, page = await visitor.get("/runs", **params)
            assert status == 200, page
            return set(re.findall(r'<tr id="run-([0-9a-f-]+)">', page))

        assert await shown() == {ok.id, bad.id}
        assert await shown(status="failed", trigger="manual") == {bad.id}
        assert await shown(trigger="schedule") == set()
        status, page = await visitor.get(f"/runs/{bad.id}")
        assert status == 200
        assert 'class="line hl"' in page
        stream = await visitor.stream("/live/runs", lambda s: bool(s.messages))
        assert ok.id in stream.messages[0].data
    finally:
        await visitor.aclose()
