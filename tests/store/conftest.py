"""Every store test runs on each backend: `store_url` is a new SQLite file, then a new
PostgreSQL schema."""

from tests.postgres import store_url

__all__ = ["store_url"]
