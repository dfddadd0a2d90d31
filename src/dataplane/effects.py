"""What each job type does to the company's data. Runs on a worker thread, inside the
transaction that will also record the job's completion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb

from dataplane import catalog, guard, nql
from dataplane.catalog import MATERIALIZED_VIEW, Dataset, IdAllocator, KnownDatasets
from dataplane.errors import JobFailure, quote
from dataplane.model import Job, JobType, JsonObject, now_iso


@dataclass(frozen=True)
class Workspace:
    """What effects share besides the cursor: the company's id allocator, the name of its
    DuckDB catalog, which the reference rule checks plans against (fixed while the file is
    open, so read once rather than per job), and the datasets known from committed jobs."""

    ids: IdAllocator
    database: str
    known: KnownDatasets = field(default_factory=KnownDatasets)


Effect = Callable[[duckdb.DuckDBPyConnection, JsonObject, Workspace], JsonObject]


def run(cur: duckdb.DuckDBPyConnection, job: Job, space: Workspace) -> JsonObject:
    return _EFFECTS[job.type](cur, job.input, space)


def materialize_view(
    cur: duckdb.DuckDBPyConnection, params: JsonObject, space: Workspace
) -> JsonObject:
    spec = _view_spec(params)
    existing = catalog.find(cur, spec.name)
    if existing is not None and existing.kind != MATERIALIZED_VIEW:
        raise JobFailure(
            f"dataset {quote(existing.name)} exists and is a {existing.kind}, not a view"
        )
    if existing is not None and not spec.replace:
        return {
            "dataset_id": existing.dataset_id,
            "dataset_name": existing.name,
            "created": False,
            "snapshot_id": None,
            "recalculation_id": None,
            "row_count": catalog.row_count(cur, existing),
        }
    select = nql.resolve_numeric_ids(spec.select, lambda i: catalog.name_of(cur, i))
    guard.check(cur, select, space.database)
    dataset = Dataset(
        dataset_id=existing.dataset_id if existing else space.ids.dataset_id(),
        name=existing.name if existing else spec.name,
        kind=MATERIALIZED_VIEW,
        query=spec.select,
        options=spec.options,
        created_at=existing.created_at if existing else now_iso(),
    )
    catalog.save(cur, dataset)
    cur.execute(f"CREATE OR REPLACE TABLE {nql.table_ref(dataset.name)} AS {select}")
    return {"created": True, **_snapshot_result(cur, dataset, space.ids)}


def _view_spec(params: JsonObject) -> nql.MaterializedViewSpec:
    spec = nql.parse_materialized_view(params["nql"])
    name = params.get("dataset_name")
    if spec is None:
        if name is None:
            raise JobFailure("dataset_name is required when nql is a SELECT")
        nql.require_select(params["nql"])
        return nql.MaterializedViewSpec(name=name, select=params["nql"].strip())
    if name is not None and name.lower() != spec.name.lower():
        raise JobFailure(
            f"dataset_name {quote(name)} differs from the view name {quote(spec.name)}"
        )
    return spec


def refresh_materialized_view(
    cur: duckdb.DuckDBPyConnection, params: JsonObject, space: Workspace
) -> JsonObject:
    dataset = catalog.require(cur, params.get("dataset_name") or params["dataset_id"])
    if dataset.kind != MATERIALIZED_VIEW or dataset.query is None:
        raise JobFailure(
            f"dataset {quote(dataset.name)} is a {dataset.kind}, not a materialized view"
        )
    select = nql.resolve_numeric_ids(dataset.query, lambda i: catalog.name_of(cur, i))
    # Checked again: the view may have been stored before the rule, or by an older plane.
    guard.check(cur, select, space.database)
    target = nql.table_ref(dataset.name)
    # One statement inside the job's transaction: readers see the old rows or the new ones.
    if dataset.options.get("write_mode") == "append":
        cur.execute(f"INSERT INTO {target} {select}")
    else:
        cur.execute(f"CREATE OR REPLACE TABLE {target} AS {select}")
    return _snapshot_result(cur, dataset, space.ids)


def execute_dml(cur: duckdb.DuckDBPyConnection, params: JsonObject, space: Workspace) -> JsonObject:
    sql = nql.resolve_numeric_ids(params["nql"], lambda i: catalog.name_of(cur, i))
    statement_type, name = nql.dml_target(sql)
    known = space.known.lookup(name)
    if known is None:
        dataset = catalog.require(cur, name)
        known = dataset.dataset_id, dataset.name
    guard.check(cur, sql, space.database)
    row = cur.execute(sql).fetchone()
    return {
        "dataset_id": known[0],
        "dataset_name": known[1],
        "statement_type": statement_type,
        "rows_affected": int(row[0]) if row else 0,
    }


def _snapshot_result(
    cur: duckdb.DuckDBPyConnection, dataset: Dataset, ids: IdAllocator
) -> JsonObject:
    snapshot = catalog.record_snapshot(cur, dataset, ids)
    return {
        "dataset_id": dataset.dataset_id,
        "dataset_name": dataset.name,
        "snapshot_id": snapshot.snapshot_id,
        "recalculation_id": snapshot.recalculation_id,
        "row_count": snapshot.row_count,
    }


_EFFECTS: dict[JobType, Effect] = {
    JobType.MATERIALIZE_VIEW: materialize_view,
    JobType.REFRESH_MATERIALIZED_VIEW: refresh_materialized_view,
    JobType.EXECUTE_DML: execute_dml,
}
