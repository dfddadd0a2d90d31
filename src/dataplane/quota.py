"""The per-company dataset quota (`--quota-dataset-bytes`; 0: none).

A company's datasets are measured as the space its DuckDB file uses: the blocks holding data
(`pragma_database_size`: used blocks × block size; the blocks a dropped dataset freed do not
count, although DuckDB keeps the file's size) plus its write-ahead log, where committed changes
wait for the next checkpoint. A job or a load is measured before its effect and again inside
its transaction, before the commit, where DuckDB has already written a large result to the
file: one that takes the company past its quota (and grew its space) is refused then, and
nothing of it stays. A smaller result stays in memory until the commit and is measured by the
next job, so the quota may be passed by one such result; from then on, only a job that deletes
runs, to make room.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from dataplane import nql
from dataplane.errors import JobFailure, QuotaExceeded
from dataplane.model import FailureKind, Job, JobType

_USED = (
    "SELECT used_blocks * block_size FROM pragma_database_size()"
    " WHERE database_name = current_database()"
)
_REMEDY = "drop or delete data, or ask the operator to raise the quota"


@dataclass(frozen=True)
class DatasetQuota:
    limit: int
    wal: Path

    def used(self, cur: duckdb.DuckDBPyConnection) -> int:
        if not self.limit:
            return 0
        row = cur.execute(_USED).fetchone()
        try:
            logged = self.wal.stat().st_size
        except FileNotFoundError:
            logged = 0
        return (int(row[0]) if row else 0) + logged

    def before_job(self, cur: duckdb.DuckDBPyConnection, job: Job) -> int:
        """The company's space before `job`'s effect; JobFailure when it fills the quota
        already and the job may add data (only a DELETE runs then)."""
        used = self.used(cur)
        if self.limit and used >= self.limit and not _deletes(job):
            raise JobFailure(self._full(used), kind=FailureKind.QUOTA)
        return used

    def after_job(self, cur: duckdb.DuckDBPyConnection, before: int) -> None:
        """JobFailure when the job's effect, not yet committed, takes the space past the quota."""
        refusal = self._past(cur, before, "the job")
        if refusal:
            raise JobFailure(refusal, kind=FailureKind.QUOTA)

    def before_load(self, cur: duckdb.DuckDBPyConnection) -> int:
        used = self.used(cur)
        if self.limit and used >= self.limit:
            raise QuotaExceeded(self._full(used))
        return used

    def after_load(self, cur: duckdb.DuckDBPyConnection, before: int) -> None:
        refusal = self._past(cur, before, "the file")
        if refusal:
            raise QuotaExceeded(refusal)

    def _past(self, cur: duckdb.DuckDBPyConnection, before: int, what: str) -> str:
        used = self.used(cur)
        if not self.limit or used <= self.limit or used <= before:
            return ""
        return (
            f"{what} would take the company's datasets to {used} bytes, past its quota of"
            f" {self.limit} bytes (the data plane's --quota-dataset-bytes): {_REMEDY}"
        )

    def _full(self, used: int) -> str:
        return (
            f"the company's datasets already take {used} bytes, the whole of its quota of"
            f" {self.limit} bytes (the data plane's --quota-dataset-bytes): {_REMEDY}"
        )


def _deletes(job: Job) -> bool:
    if job.type is not JobType.EXECUTE_DML:
        return False
    try:
        return nql.statement_kind(str(job.input.get("nql", ""))) == "DELETE"
    except JobFailure:
        return False
