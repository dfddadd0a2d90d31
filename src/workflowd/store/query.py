"""SELECTs assembled from optional filters, and keyset-paged listings: the one place that
builds SQL text from parts (every value is a bound parameter; only our own column names and
clauses are ever spelled into the text)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from workflowd.domain.page import Page
from workflowd.store.paging import PageTokens
from workflowd.store.sql import Dialect, marks

T = TypeVar("T")


class Reader(Protocol):
    """A read-only connection inside a snapshot (one transaction) for the caller's reads."""

    dialect: Dialect

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Any]: ...


class Select:
    def __init__(self, table: str, clause: str, *args: object) -> None:
        self._table = table
        self._clauses = [clause]
        self._args: list[object] = list(args)

    def where(self, clause: str, *args: object) -> Select:
        self._clauses.append(clause)
        self._args.extend(args)
        return self

    def where_if(self, present: object, clause: str, *args: object) -> Select:
        """`where`, only when `present` is truthy (an optional filter)."""
        return self.where(clause, *args) if present else self

    def where_in(self, column: str, values: Iterable[object]) -> Select:
        listed = list(values)
        if listed:
            self.where(f"{column} IN ({marks(len(listed))})", *listed)
        return self

    async def fetch(self, reader: Reader, order: str, limit: int) -> list[Any]:
        sql = f"SELECT * FROM {self._table} WHERE {' AND '.join(self._clauses)}"
        return await reader.fetch(f"{sql} ORDER BY {order} LIMIT ?", (*self._args, limit))


async def keyset_page(
    reader: Reader,
    select: Select,
    size: int,
    token: str,
    filter_key: str,
    build: Callable[[Sequence[Any]], Awaitable[list[T]]],
    tokens: PageTokens,
) -> Page[T]:
    """Newest first by `seq`, continuing below the token's `seq`; `build` turns the page's rows
    into items in one go (so related rows load in one query, not one per item)."""
    after = tokens.decode(token, filter_key)
    select.where_if(after is not None, "seq < ?", after)
    rows = await select.fetch(reader, "seq DESC", size + 1)
    kept = rows[:size]
    items = await build(kept)
    return Page(items, tokens.after([r["seq"] for r in kept], filter_key), len(rows) > size)
