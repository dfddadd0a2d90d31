"""The per-company dataset quota (`--quota-dataset-bytes`; 0: none).

A company's datasets are measured as the space its DuckDB file uses: the blocks holding data
(`pragma_database_size`: used blocks × block size; the blocks a dropped dataset freed do not
count, although DuckDB keeps the file's size) plus its write-ahead log, where committed changes
wait for the next checkpoint. Inside a job's or a load's transaction the measure includes what
it has written so far (DuckDB writes large results to the file before the commit), so a job or
a load that would take the company past its quota is refused before it commits: the job fails
saying so, the load is refused. A small uncommitted change that DuckDB keeps in memory is
counted only once committed, so the quota may be passed by less than DuckDB's checkpoint
threshold (16 MiB).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from dataplane.errors import JobFailure, QuotaExceeded

_USED = (
    "SELECT used_blocks * block_size FROM pragma_database_size()"
    " WHERE database_name = current_database()"
)


@dataclass(frozen=True)
class DatasetQuota:
    limit: int
    wal: Path

    def used(self, cur: duckdb.DuckDBPyConnection) -> int:
        row = cur.execute(_USED).fetchone()
        try:
            logged = self.wal.stat().st_size
        except FileNotFoundError:
            logged = 0
        return (int(row[0]) if row else 0) + logged

    def refusal(self, cur: duckdb.DuckDBPyConnection, what: str, *, written: bool) -> str:
        """Why `what` (the job, the file) may not add data, or "": before writing, the
        company's datasets already fill the quota; after (`written`), they would pass it."""
        if not self.limit:
            return ""
        used = self.used(cur)
        if used < self.limit or (written and used == self.limit):
            return ""
        where = (
            f"{what} would take the company's datasets to {used} bytes, past"
            if written
            else f"the company's datasets already take {used} bytes, the whole of"
        )
        return (
            f"{where} its quota of {self.limit} bytes (the data plane's --quota-dataset-bytes):"
            " drop datasets, or ask the operator to raise the quota"
        )

    def check_job(self, cur: duckdb.DuckDBPyConnection, *, written: bool) -> None:
        refusal = self.refusal(cur, "the job", written=written)
        if refusal:
            raise JobFailure(refusal)

    def check_load(self, cur: duckdb.DuckDBPyConnection, *, written: bool) -> None:
        refusal = self.refusal(cur, "the file", written=written)
        if refusal:
            raise QuotaExceeded(refusal)
