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
from dataplane.errors import BadRequest, Conflict, quote, readable
from dataplane.journal import rollback
from dataplane.model import JsonObject, now_iso
from dataplane.quota import DatasetQuota

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
    quota: DatasetQuota,
) -> JsonObject:
    """Loads the file as `company_data.<name>`, within the company's dataset quota; the caller
    has validated `name`."""
    before = quota.before_load(cur)
    with duckdb.connect() as source:
        columns = _open_file(source, path, file_format)
        cur.execute("BEGIN")
        try:
            dataset = _replace_table(cur, ids, source, columns, name, replace)
            catalog.record_snapshot(cur, dataset, ids)
            quota.after_load(cur, before)
            cur.execute("COMMIT")
        except duckdb.Error as exc:
            rollback(cur)
            raise _load_failure(exc, file_format, name) from exc
        except BaseException:
            rollback(cur)
            raise
    return catalog.describe(cur, dataset)


def _open_file(
    source: duckdb.DuckDBPyConnection, path: Path, file_format: str
) -> list[tuple[str, str]]:
    """Starts reading the file on `source`; returns its (column, type) pairs."""
    reader = "read_csv" if file_format == "csv" else "read_parquet"
    try:
        columns = source.execute(
            f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {reader}(?))",
            [str(path)],
        ).fetchall()
        select = catalog.python_safe_select(columns)
        source.execute(f"SELECT {select} FROM {reader}(?)", [str(path)])
    except duckdb.Error as exc:
        # The temporary file's name would tell the caller where the data plane keeps its data.
        message = readable(str(exc).replace(str(path), "the uploaded file"), 500)
        raise BadRequest(f"cannot read the {file_format} file: {message}") from exc
    return [(str(column), str(kind)) for column, kind in columns]


def _load_failure(exc: duckdb.Error, file_format: str, name: str) -> Conflict | BadRequest:
    if isinstance(exc, duckdb.TransactionException):
        return Conflict(
            f"dataset {quote(name)} was changed by a job or another load at the same time;"
            " try again"
        )
    return BadRequest(
        f"cannot load the {file_format} file into {nql.table_ref(name)}: {readable(str(exc), 500)}"
    )


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
        raise Conflict(f"dataset {quote(existing.name)} already exists; load with replace=true")
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
