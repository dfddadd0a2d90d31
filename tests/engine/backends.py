"""A daemon on each store (SQLite, and PostgreSQL when the test server is reachable), and
direct reads of what it stored."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest

from tests.conftest import Daemon
from tests.postgres import fresh_schema


@pytest.fixture(params=["sqlite", "postgresql"])
async def each_store(
    request: pytest.FixtureRequest, start_daemon: Callable[..., Awaitable[Daemon]]
) -> AsyncIterator[Callable[..., Awaitable[Daemon]]]:
    """Starts daemons (with the given settings) on SQLite, then on PostgreSQL."""
    if request.param == "sqlite":
        yield start_daemon
        return
    # The schema outlives the daemons: it is dropped after they have drained.
    with fresh_schema() as url:
        started: list[Daemon] = []

        async def start(**settings: Any) -> Daemon:
            started.append(await start_daemon(store=url, **settings))
            return started[-1]

        yield start
        for daemon in started:
            await daemon.app.drain()


def stored(daemon: Daemon, sql: str, *args: Any) -> list[Any]:
    """Rows of the daemon's store, read directly (SQLite or PostgreSQL)."""
    url = daemon.app.settings.store
    if url.startswith("postgresql"):
        with psycopg.connect(url) as pg:
            return [tuple(row) for row in pg.execute(sql.replace("?", "%s"), args).fetchall()]
    with contextlib.closing(sqlite3.connect(daemon.data_dir / "workflowd.db")) as conn:
        return conn.execute(sql, args).fetchall()
