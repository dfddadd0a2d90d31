"""What the store's SQL runs on: a connection with one `execute`, rows read by column name, and
the few fragments that differ between SQLite and PostgreSQL.

Every statement is written once, with `?` placeholders; a dialect turns them into its own
(psycopg takes `%s`). Only our own column names and clauses are ever spelled into SQL text;
every value is a bound parameter.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Row(Protocol):
    def __getitem__(self, key: str, /) -> Any: ...


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    placeholder: str
    # `EXISTS (…)` true when the JSON array of tags in `workflows.tags` holds the bound value.
    has_tag: str
    # How the migrations' SQLite column types read in this dialect.
    types: tuple[tuple[str, str], ...] = ()
    # Ends a SELECT whose rows a write then takes, so concurrent writers skip each other's rows
    # instead of waiting (SQLite has one writer at a time and no such clause).
    lock_rows: str = ""
    # A query of the database's own clock (column `now`, a datetime with its zone), where
    # several processes share the store; empty where one process has it to itself.
    clock: str = ""
    # The size of a TEXT value in UTF-8 bytes, as stored values are counted (`{}`: the value);
    # LENGTH counts characters.
    octets: str = "LENGTH(CAST({} AS BLOB))"

    def sql(self, text: str) -> str:
        if self.placeholder == "?":
            return text
        return text.replace("%", "%%").replace("?", self.placeholder)

    def ddl(self, text: str) -> str:
        """A migration statement, written for SQLite, in this dialect."""
        if not self.types:
            return text
        own = dict(self.types)
        # One pass over whole words, longest type first: a replacement is never rewritten
        # (`TEXT COLLATE "C"`, `BIGINT`) and no column name that contains a type is touched.
        names = sorted(own, key=len, reverse=True)
        pattern = r"\b(?:" + "|".join(re.escape(name) for name in names) + r")\b"
        return re.sub(pattern, lambda found: own[found.group(0)], text)


SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    has_tag="EXISTS (SELECT 1 FROM json_each(workflows.tags) WHERE value = ?)",
)
POSTGRESQL = Dialect(
    name="postgresql",
    placeholder="%s",
    has_tag=(
        "EXISTS (SELECT 1 FROM jsonb_array_elements_text(workflows.tags::jsonb) AS t(tag)"
        " WHERE t.tag = ?)"
    ),
    # Sequences and counters outgrow 32 bits; REAL is single precision there. Timestamps are
    # ISO-8601 text compared as strings (`next_fire_at <= ?`), which is time order only
    # byte-wise: a database's linguistic collation (en_US…) would not keep it.
    types=(
        ("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY"),
        ("INTEGER", "BIGINT"),
        ("REAL", "DOUBLE PRECISION"),
        ("TEXT", 'TEXT COLLATE "C"'),
    ),
    lock_rows=" FOR UPDATE SKIP LOCKED",
    clock="SELECT clock_timestamp() AS now",
    octets="OCTET_LENGTH({})",
)


class Conn(Protocol):
    """One connection inside a transaction the caller owns."""

    dialect: Dialect

    def execute(self, sql: str, args: Sequence[object] = ()) -> Cursor: ...


class SqliteConn:
    """The standard library's connection, seen as a `Conn` (its `?` placeholders are ours)."""

    dialect = SQLITE

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.raw = conn

    def execute(self, sql: str, args: Sequence[object] = ()) -> Cursor:
        return self.raw.execute(sql, tuple(args))


def marks(count: int) -> str:
    """`?, ?, …` for an IN list of `count` values."""
    return ", ".join("?" * count)
