"""Persistence. Only this package talks SQL."""

from workflowd.store.sqlite import SqliteStore

__all__ = ["SqliteStore"]
