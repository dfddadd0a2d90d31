"""The trusted loader: turns an uploaded CSV or Parquet file into `company_data.<name>`.

The company's database has external access disabled and its configuration locked, so it
cannot read files at all. The file is read instead by a fresh in-memory DuckDB that never
runs user NQL, and its rows are handed over in column chunks as query parameters.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from dataplane import catalog, nql
from dataplane.catalog import TABLE, Dataset, IdAllocator
from dataplane.effects import check_new_name
from dataplane.errors import BadRequest, Conflict, JobFailure
from dataplane.journal import rollback
from dataplane.model import DATASET_NAME_RE, JsonObject, now_iso

FORMATS = ("csv", "parquet")
_CHUNK_ROWS = 50_000


def load(
    cur: duckdb.DuckDBPyConnection,
    ids: IdAllocator,
    *,
    path: Path,
    file_format: str,
    name: str,
    replace: bool,
) -> JsonObject:
    if not DATASET_NAME_RE.match(name):
        raise BadRequest("the dataset name must match ^[A-Za-z0-9_]{1,256}$")
    try:
        check_new_name(name)
    except JobFailure as exc:
        raise BadRequest(exc.detail) from exc
    with duckdb.connect() as source:
        try:
            reader = "read_csv" if file_format == "csv" else "read_parquet"
            columns = source.execute(
                f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {reader}(?))",
                [str(path)],
            ).fetchall()
            source.execute(
                f"SELECT {catalog.python_safe_select(columns)} FROM {reader}(?)", [str(path)]
            )
        except duckdb.Error as exc:
            raise BadRequest(f"cannot read the {file_format} file: {exc}") from exc
        cur.execute("BEGIN")
        try:
            dataset = _replace_table(cur, ids, source, columns, name, replace)
            catalog.record_snapshot(cur, dataset, ids)
            cur.execute("COMMIT")
        except BaseException:
            rollback(cur)
            raise
    return catalog.describe(cur, dataset)


def _replace_table(
    cur: duckdb.DuckDBPyConnection,
    ids: IdAllocator,
    source: duckdb.DuckDBPyConnection,
    columns: list[tuple[str, str]],
    name: str,
    replace: bool,
) -> Dataset:
    existing = catalog.find(cur, name)
    if existing is not None and not replace:
        raise Conflict(f"dataset {existing.name!r} already exists; load with replace=true")
    target = nql.table_ref(existing.name if existing else name)
    definition = ", ".join(f"{nql.quote_ident(c)} {t}" for c, t in columns)
    cur.execute(f"CREATE OR REPLACE TABLE {target} ({definition})")
    casts = ", ".join(f"unnest(${i + 1})::{t}" for i, (_, t) in enumerate(columns))
    while rows := source.fetchmany(_CHUNK_ROWS):
        chunk = [list(column) for column in zip(*rows, strict=True)]
        cur.execute(f"INSERT INTO {target} SELECT {casts}", chunk)
    dataset = Dataset(
        dataset_id=existing.dataset_id if existing else ids.dataset_id(),
        name=existing.name if existing else name,
        kind=TABLE,
        created_at=existing.created_at if existing else now_iso(),
    )
    catalog.save(cur, dataset)
    return dataset
