"""Persistence. Only this package talks SQL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from workflowd.domain.errors import InvalidRequest
from workflowd.domain.quotas import Quotas
from workflowd.store.face import Store
from workflowd.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store", "make_store"]


def make_store(url: str, default_path: Path, quotas: Quotas | None = None) -> Store:
    """The store `url` names (`--store`): `sqlite:///ABSOLUTE/PATH`, `postgresql://…`, or
    without one the SQLite file at `default_path`; it enforces `quotas` (default: the
    defaults)."""
    if not url:
        return SqliteStore(default_path, quotas)
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        # Imported here: a daemon on SQLite never loads psycopg.
        from workflowd.store.postgres import PostgresStore

        return PostgresStore(url, quotas)
    if parts.scheme == "sqlite" and not parts.netloc and parts.path.startswith("/"):
        return SqliteStore(Path(unquote(parts.path)), quotas)
    raise InvalidRequest(
        "store", "give sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST:PORT/DATABASE"
    )
