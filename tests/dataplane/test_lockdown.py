"""User NQL cannot reach files, extensions, configuration, or another company's data."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataplane.auth import TokenTable
from tests.dataplane.dp_support import EVENTS_CSV, Client, PlaneFactory, Running


def _cases(tmp: Path) -> list[tuple[str, str, str]]:
    """(job type, nql, a phrase the failure message must contain)."""
    target = tmp / "written.csv"
    return [
        ("materialize-view", "SELECT * FROM read_csv('/etc/passwd')", "Permission Error"),
        ("materialize-view", f"SELECT * FROM read_parquet('{tmp}/x.parquet')", "Permission Error"),
        ("materialize-view", "SELECT * FROM read_text('/etc/passwd')", "Permission Error"),
        ("materialize-view", "SELECT * FROM '/etc/passwd'", "/etc/passwd"),
        ("materialize-view", "SELECT * FROM glob('/etc/*')", "Permission Error"),
        (
            "execute-dml",
            "INSERT INTO company_data.events SELECT * FROM read_csv('/etc/hosts')",
            "Permission Error",
        ),
        ("execute-dml", f"ATTACH '{tmp}/other.duckdb' AS other", "not ATTACH"),
        ("materialize-view", f"ATTACH '{tmp}/other.duckdb' AS other", "not ATTACH"),
        ("execute-dml", "INSTALL httpfs", "not INSTALL"),
        ("execute-dml", "LOAD httpfs", "not LOAD"),
        ("execute-dml", f"COPY (SELECT 1) TO '{target}'", "not COPY"),
        ("execute-dml", f"COPY company_data.events TO '{target}'", "not COPY"),
        ("execute-dml", "SET enable_external_access = true", "not SET"),
        ("execute-dml", "PRAGMA threads = 1", "not PRAGMA"),
        ("execute-dml", f"EXPORT DATABASE '{tmp}/export'", "not EXPORT"),
        ("materialize-view", "SELECT 1 AS x; ATTACH ':memory:' AS m", "exactly one statement"),
        (
            "materialize-view",
            "SELECT current_setting('lock_configuration') AS x; SET threads=1",
            "exactly one",
        ),
    ]


async def test_every_escape_is_refused(dp: Running, tmp_path: Path) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    for job_type, nql, phrase in _cases(tmp_path):
        job_input = {"nql": nql}
        if job_type == "materialize-view":
            job_input["dataset_name"] = "escaped"
        job = await dp.client.run(job_type, job_input)
        assert job["state"] == "failed", (nql, job)
        assert phrase in job["failures"][0]["message"], (nql, job["failures"])
    assert not (tmp_path / "written.csv").exists()
    assert not (tmp_path / "export").exists()
    assert dp.query("SELECT count(*) FROM company_data.events") == [(100,)]
    _, datasets = await dp.client.request("GET", "/datasets")
    assert [d["dataset_name"] for d in datasets["records"]] == ["events"]


async def test_configuration_is_locked_with_external_access_off(dp: Running) -> None:
    await dp.client.request("GET", "/datasets")  # opens the default company
    settings = dict(
        dp.query(
            "SELECT name, value FROM duckdb_settings()"
            " WHERE name IN ('enable_external_access', 'lock_configuration')"
        )
    )
    assert settings == {"enable_external_access": "false", "lock_configuration": "true"}


@pytest.mark.parametrize(
    "nql",
    [
        "SELECT * FROM globex.company_data.events",
        "SELECT * FROM read_parquet('{data}/globex.duckdb')",
        "SELECT * FROM read_blob('{data}/globex.duckdb')",
    ],
)
async def test_one_company_cannot_reach_anothers_data(start_plane: PlaneFactory, nql: str) -> None:
    plane = await start_plane(
        tokens=TokenTable.of({"tok-a": "acme", "tok-g": "globex"}), token="tok-g"
    )
    await plane.client.load_csv("events", EVENTS_CSV)
    acme = Client(plane.client.url, plane.client.session, "tok-a")
    attach = await acme.run(
        "execute-dml", {"nql": f"ATTACH '{plane.data_dir}/globex.duckdb' AS globex"}
    )
    assert attach["state"] == "failed"
    job = await acme.run(
        "materialize-view",
        {"nql": nql.format(data=plane.data_dir), "dataset_name": "stolen"},
    )
    assert job["state"] == "failed", job
    _, datasets = await acme.request("GET", "/datasets")
    assert datasets == {"records": []}
