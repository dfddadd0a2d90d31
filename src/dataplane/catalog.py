"""The dataset catalog: integer ids, kinds, view definitions and snapshots.

A dataset's data is a real table `company_data."<name>"`; the catalog row in
`_dataplane.datasets` gives it an id and, for a materialized view, its defining query.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import duckdb

from dataplane.errors import JobFailure, NotFound, quote
from dataplane.model import JsonObject, now_iso
from dataplane.nql import quote_ident, table_ref

# The company's DuckDB database: its datasets in `company_data`, the catalog in `_dataplane`.
SCHEMA_DDL = """
CREATE SCHEMA IF NOT EXISTS company_data;
CREATE SCHEMA IF NOT EXISTS _dataplane;
CREATE TABLE IF NOT EXISTS _dataplane.datasets (
    dataset_id BIGINT NOT NULL, name VARCHAR NOT NULL, kind VARCHAR NOT NULL,
    query VARCHAR, options VARCHAR NOT NULL, created_at VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS _dataplane.snapshots (
    dataset_id BIGINT NOT NULL, snapshot_id BIGINT NOT NULL, recalculation_id VARCHAR NOT NULL,
    created_at VARCHAR NOT NULL, row_count BIGINT NOT NULL);
"""
TABLE = "table"
MATERIALIZED_VIEW = "materialized_view"


@dataclass(frozen=True)
class Dataset:
    dataset_id: int
    name: str
    kind: str
    query: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: int
    recalculation_id: str
    created_at: str
    row_count: int

    def to_json(self) -> JsonObject:
        return {
            "snapshot_id": self.snapshot_id,
            "recalculation_id": self.recalculation_id,
            "created_at": self.created_at,
            "row_count": self.row_count,
        }


class IdAllocator:
    """Hands out dataset and snapshot ids without a database round trip.

    Ids come from memory rather than `max(...) + 1` in SQL so that concurrent transactions
    never pick the same one; an id taken by a transaction that rolls back is simply skipped.
    """

    def __init__(self, cur: duckdb.DuckDBPyConnection) -> None:
        self._lock = threading.Lock()
        self._dataset = _max(cur, "SELECT max(dataset_id) FROM _dataplane.datasets")
        self._snapshot = _max(cur, "SELECT max(snapshot_id) FROM _dataplane.snapshots")

    def dataset_id(self) -> int:
        with self._lock:
            self._dataset += 1
            return self._dataset

    def snapshot_id(self) -> int:
        with self._lock:
            self._snapshot += 1
            return self._snapshot


class KnownDatasets:
    """The ids and names of datasets that committed jobs reported, so that a job need not find
    its target in the catalog: once committed, a dataset keeps its id and name (datasets are
    never dropped, and replacing one keeps both)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, tuple[int, str]] = {}

    def lookup(self, name: str) -> tuple[int, str] | None:
        """(id, name) of the dataset `name` designates (case-insensitive), if known."""
        if not name.isascii():  # Python and DuckDB agree on the case of ASCII letters only
            return None
        with self._lock:
            return self._by_name.get(name.lower())

    def learn(self, results: Iterable[JsonObject]) -> None:
        """Records the datasets named by the results of jobs whose effects committed."""
        with self._lock:
            for result in results:
                dataset_id, name = result.get("dataset_id"), result.get("dataset_name")
                if isinstance(dataset_id, int) and isinstance(name, str) and name.isascii():
                    self._by_name[name.lower()] = (dataset_id, name)


def _max(cur: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = cur.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


_SELECT = "SELECT dataset_id, name, kind, query, options, created_at FROM _dataplane.datasets"


def _dataset(row: tuple[Any, ...]) -> Dataset:
    return Dataset(int(row[0]), row[1], row[2], row[3], json.loads(row[4]), row[5])


def find(cur: duckdb.DuckDBPyConnection, name_or_id: str | int) -> Dataset | None:
    """By id for an int, else by name (case-insensitive, as DuckDB)."""
    if isinstance(name_or_id, int):
        row = cur.execute(f"{_SELECT} WHERE dataset_id = ?", [name_or_id]).fetchone()
    else:
        row = cur.execute(f"{_SELECT} WHERE lower(name) = lower(?)", [name_or_id]).fetchone()
    return _dataset(row) if row else None


def _shown(name_or_id: str | int) -> str:
    return str(name_or_id) if isinstance(name_or_id, int) else quote(name_or_id)


def get(cur: duckdb.DuckDBPyConnection, name_or_id: str | int) -> Dataset:
    dataset = find(cur, name_or_id)
    if dataset is None:
        raise NotFound(f"no dataset {_shown(name_or_id)}")
    return dataset


def require(cur: duckdb.DuckDBPyConnection, name_or_id: str | int) -> Dataset:
    """`get` for use inside a job, where a missing dataset fails the job."""
    dataset = find(cur, name_or_id)
    if dataset is None:
        raise JobFailure(f"no dataset {_shown(name_or_id)} in company_data")
    return dataset


def name_of(cur: duckdb.DuckDBPyConnection, dataset_id: int) -> str:
    return require(cur, dataset_id).name


def save(cur: duckdb.DuckDBPyConnection, dataset: Dataset) -> None:
    cur.execute("DELETE FROM _dataplane.datasets WHERE dataset_id = ?", [dataset.dataset_id])
    cur.execute(
        "INSERT INTO _dataplane.datasets VALUES (?, ?, ?, ?, ?, ?)",
        [
            dataset.dataset_id,
            dataset.name,
            dataset.kind,
            dataset.query,
            json.dumps(dataset.options),
            dataset.created_at or now_iso(),
        ],
    )


def record_snapshot(cur: duckdb.DuckDBPyConnection, dataset: Dataset, ids: IdAllocator) -> Snapshot:
    snapshot = Snapshot(ids.snapshot_id(), str(uuid.uuid4()), now_iso(), row_count(cur, dataset))
    cur.execute(
        "INSERT INTO _dataplane.snapshots VALUES (?, ?, ?, ?, ?)",
        [dataset.dataset_id, *snapshot.to_json().values()],
    )
    return snapshot


def row_count(cur: duckdb.DuckDBPyConnection, dataset: Dataset) -> int:
    row = cur.execute(f"SELECT count(*) FROM {table_ref(dataset.name)}").fetchone()
    return int(row[0]) if row else 0


def list_all(cur: duckdb.DuckDBPyConnection) -> list[JsonObject]:
    datasets = [_dataset(r) for r in cur.execute(f"{_SELECT} ORDER BY dataset_id").fetchall()]
    return [summary(cur, d) for d in datasets]


def summary(cur: duckdb.DuckDBPyConnection, dataset: Dataset) -> JsonObject:
    return {
        "dataset_id": dataset.dataset_id,
        "dataset_name": dataset.name,
        "kind": dataset.kind,
        "row_count": row_count(cur, dataset),
        "created_at": dataset.created_at,
        "display_name": dataset.options.get("display_name"),
        "description": dataset.options.get("description"),
    }


def _columns(cur: duckdb.DuckDBPyConnection, dataset: Dataset) -> list[tuple[str, str]]:
    rows = cur.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'company_data' AND lower(table_name) = lower(?)"
        " ORDER BY ordinal_position",
        [dataset.name],
    ).fetchall()
    return [(str(name), str(kind)) for name, kind in rows]


def python_safe_select(columns: list[tuple[str, str]]) -> str:
    """A select list that DuckDB can hand to Python. Zoned timestamps are read as text: as
    Python objects they would need pytz, and their text keeps the offset, so nothing is lost."""
    return ", ".join(
        f"CAST({quote_ident(c)} AS VARCHAR)" if "TIME ZONE" in t else quote_ident(c)
        for c, t in columns
    )


def describe(cur: duckdb.DuckDBPyConnection, dataset: Dataset) -> JsonObject:
    snapshots = cur.execute(
        "SELECT snapshot_id, recalculation_id, created_at, row_count FROM _dataplane.snapshots"
        " WHERE dataset_id = ? ORDER BY snapshot_id",
        [dataset.dataset_id],
    ).fetchall()
    described = summary(cur, dataset)
    described.update(
        columns=[{"name": name, "type": kind} for name, kind in _columns(cur, dataset)],
        snapshots=[Snapshot(*row).to_json() for row in snapshots],
        query=dataset.query,
        options=dataset.options,
    )
    return described


def sample(cur: duckdb.DuckDBPyConnection, dataset: Dataset, limit: int) -> JsonObject:
    columns = _columns(cur, dataset)
    select = python_safe_select(columns)
    rows = cur.execute(f"SELECT {select} FROM {table_ref(dataset.name)} LIMIT ?", [limit])
    return {
        "columns": [c for c, _ in columns],
        "rows": [[_jsonable(v) for v in row] for row in rows.fetchall()],
    }


def _jsonable(value: object) -> object:
    """Sample values as JSON: numbers and strings as they are, everything else (including the
    floats JSON has no literal for: NaN and the infinities) as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return str(value)
