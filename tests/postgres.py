"""A real PostgreSQL for tests: each test gets a schema of its own in the server named by
`WORKFLOWD_TEST_POSTGRES`, dropped afterwards. Without a reachable server the PostgreSQL tests
are skipped, unless `WORKFLOWD_REQUIRE_POSTGRES=1` (CI) makes that a failure."""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from workflowd.store.postgres import redact

URL = os.environ.get("WORKFLOWD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRED = os.environ.get("WORKFLOWD_REQUIRE_POSTGRES") == "1"


@functools.cache
def unreachable() -> str:
    """Why the test server cannot be used ("" when it can)."""
    try:
        with psycopg.connect(URL, connect_timeout=5):
            return ""
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no PostgreSQL at {redact(URL)} (set WORKFLOWD_TEST_POSTGRES): {first}"


def require_server() -> None:
    """Skip the calling test without a server; fail it when one is required."""
    reason = unreachable()
    if not reason:
        return
    if REQUIRED:
        pytest.fail(f"WORKFLOWD_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)  # ok: no server here and none required (CI requires one)


def in_schema(url: str, schema: str) -> str:
    """`url` with `schema` first on the connection's search path."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


@contextmanager
def fresh_schema() -> Iterator[str]:
    """The URL of a new, empty schema of the test server, dropped with all it holds after."""
    require_server()
    schema = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield in_schema(URL, schema)
    finally:
        with psycopg.connect(URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL for `--store` naming a new, empty store: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/w.db"
        return
    with fresh_schema() as url:
        yield url
