"""Proofs of completion: a row per completed job, written in the DuckDB transaction that holds
the job's effect.

The job journal (`store`, SQLite) records a completion after DuckDB committed the effect. A
crash between the two commits leaves the job `running` in the journal, with its effect and its
proof in DuckDB: at the next start the proof completes the job with its result instead of
running it again, so an effect takes place once. A proof is forgotten once the journal's record
of the completion has committed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

import duckdb

from dataplane.model import Job, JobState, JsonObject

SCHEMA_DDL = """
CREATE TABLE IF NOT EXISTS _dataplane.completions (
    job_id VARCHAR NOT NULL, result VARCHAR NOT NULL, ended_at VARCHAR NOT NULL);
"""


@dataclass(frozen=True)
class Proof:
    result: JsonObject
    ended_at: str

    def completes(self, job: Job) -> Job:
        """`job` as it was committed with its effect."""
        return replace(
            job,
            state=JobState.COMPLETED,
            result=self.result,
            updated_at=self.ended_at,
            ended_at=self.ended_at,
        )


def record(cur: duckdb.DuckDBPyConnection, jobs: Sequence[Job]) -> None:
    """Within the effects' transaction: the proofs of these completed jobs."""
    cur.execute(
        "INSERT INTO _dataplane.completions SELECT unnest($1::VARCHAR[]),"
        " unnest($2::VARCHAR[]), unnest($3::VARCHAR[])",
        [
            [job.job_id for job in jobs],
            [json.dumps(job.result) for job in jobs],
            [job.ended_at or "" for job in jobs],
        ],
    )


def find(cur: duckdb.DuckDBPyConnection, job_ids: Sequence[str]) -> dict[str, Proof]:
    if not job_ids:
        return {}
    rows = cur.execute(
        "SELECT job_id, result, ended_at FROM _dataplane.completions"
        " WHERE job_id IN (SELECT unnest($1::VARCHAR[]))",
        [list(job_ids)],
    ).fetchall()
    return {str(row[0]): Proof(json.loads(row[1]), str(row[2])) for row in rows}


def forget(cur: duckdb.DuckDBPyConnection, job_ids: Sequence[str] | None = None) -> None:
    """Deletes the proofs of these jobs (all of them without `job_ids`), whose completions the
    journal has committed; in a transaction of its own."""
    if job_ids is None:
        cur.execute("DELETE FROM _dataplane.completions")
    elif job_ids:
        cur.execute(
            "DELETE FROM _dataplane.completions WHERE job_id IN (SELECT unnest($1::VARCHAR[]))",
            [list(job_ids)],
        )
